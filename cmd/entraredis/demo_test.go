package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// summaryInt reads an integer from the summary row named name (its first number).
func summaryInt(t *testing.T, out, name string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `\s+(\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, "summary row %q", name)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

func TestDemo(t *testing.T) {
	testutil.Slow(t)
	tests := []struct {
		name string
		args []string
	}{
		{"miniredis over TLS", nil},
		{"real redis-server, plain TCP", []string{"--redis-server", "redis-server", "--plain", "--duration", "2s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.args) > 0 {
				if _, err := exec.LookPath("redis-server"); err != nil {
					t.Skip("redis-server is not installed (apt-get install redis-server)")
				}
			}
			base := runtime.NumGoroutine()
			args := append([]string{"demo", "--duration", "3s", "--lifetime", "1s", "--workers", "4", "--progress", "500ms"}, tt.args...)
			code, out, errOut := cli(t, "", args...)
			t.Log(out)
			require.Equal(t, exitOK, code, errOut)
			assert.Empty(t, errOut)
			assert.GreaterOrEqual(t, summaryInt(t, out, "token rotations"), 1)
			assert.Regexp(t, `(?m)^  commands\s+\d+ ok, 0 failed`, out)
			assert.Greater(t, summaryInt(t, out, "commands"), 100)
			assert.GreaterOrEqual(t, summaryInt(t, out, "re-AUTHs"), 1)
			assert.Regexp(t, `(?m)^  counters\s+4/4 equal`, out)
			assert.Regexp(t, `(?m)^PASS$`, out)
			assert.NotContains(t, out, "\r", "not a terminal: plain progress lines")
			assert.GreaterOrEqual(t, strings.Count(out, " ops/s "), 3, "a progress line every 500ms")
			testutil.WaitGoroutines(t, base)
		})
	}
}

// An identity provider outage longer than a token's life and the hook's retries makes commands
// fail: the demo says so and exits 1. (A shorter one only slows commands down: the hook retries
// them once a token is back.)
func TestDemoOutageFails(t *testing.T) {
	testutil.Slow(t)
	code, out, _ := cli(t, "", "demo", "--duration", "4s", "--lifetime", "600ms", "--outage", "3s", "--workers", "4")
	t.Log(out)
	assert.Equal(t, exitFailed, code)
	// No command meets the server's close at expiry, so go-redis never sends one again with its
	// fate unknown: every INCR ran once, however the outage ended them (the counters below).
	// Closes at expiry themselves are not asserted here: with 600 ms tokens, connections dialled
	// in the token's last moments before the outage can still be closed by the server (0 to 14
	// seen on a loaded machine, idle ones: the counters stayed equal in every run). Open issue.
	assert.Regexp(t, `(?m)^  closes at expiry\s+\d+ `, out)
	assert.Regexp(t, `(?m)^  counters\s+4/4 equal`, out)
	assert.Regexp(t, `(?m)^  commands\s+\d+ ok, [1-9]\d* failed`, out)
	assert.Regexp(t, `(?m)^  IdP outage\s+3s from 1.3s; [1-9]\d* token requests failed`, out)
	assert.Contains(t, out, "last error")
	assert.Regexp(t, `(?m)^FAIL$`, out)
}

func TestDemoInterrupted(t *testing.T) {
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel) // Ctrl-C
	start := time.Now()
	code, out, _ := cliCtx(t, ctx, "", "demo", "--duration", "1m", "--lifetime", "1s", "--workers", "2")
	t.Log(out)
	assert.Less(t, time.Since(start), 15*time.Second)
	assert.Equal(t, exitOK, code, "commands in flight at Ctrl-C are not failures")
	assert.Contains(t, out, "interrupted")
	assert.Regexp(t, `(?m)^  counters\s+2/2 equal`, out)
	testutil.WaitGoroutines(t, base)
}

func TestDemoUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "0s"}, "must be positive"},
		{[]string{"--outage", "-1s"}, "not negative"},
		{[]string{"--lifetime", "100ms"}, "at least 500ms"},
		{[]string{"--workers", "0"}, "between 1 and 1024"},
		{[]string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			code, _, errOut := cli(t, "", append([]string{"demo"}, tt.args...)...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, errOut, tt.want)
		})
	}
	code, _, errOut := cli(t, "", "demo", "--redis-server", "/nonexistent/redis-server")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut, "apt-get install redis-server")
}

func TestIsTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	assert.False(t, isTerminal(w))
	assert.False(t, isTerminal(&strings.Builder{}))
	if f, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer f.Close()
		assert.True(t, isTerminal(f))
	}
}

// demo --metrics prints what entraotel collected, and it agrees with the summary.
func TestDemoMetrics(t *testing.T) {
	testutil.Slow(t)
	base := runtime.NumGoroutine()
	code, out, errOut := cli(t, "", "demo", "--duration", "3s", "--lifetime", "1s", "--workers", "4", "--progress", "1s", "--metrics")
	t.Log(out)
	require.Equal(t, exitOK, code, errOut)
	metric := func(name string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `\s+(\d+)`).FindStringSubmatch(out)
		require.NotNil(t, m, "metric %q", name)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return n
	}
	assert.Contains(t, out, "metrics (OpenTelemetry")
	// The metrics are collected a moment after the summary's rows: a refresh (every ~0.6s with 1s
	// tokens) may fall in between, and renew the connection of the summary's last GET.
	rotations, refreshes := summaryInt(t, out, "token rotations"), metric("entraredis.token.refreshes")
	assert.Contains(t, []int{rotations + 1, rotations + 2}, refreshes, "the first token is not a rotation")
	reauths := summaryInt(t, out, "re-AUTHs")
	assert.GreaterOrEqual(t, metric("entraredis.connection.reauths"), reauths)
	assert.LessOrEqual(t, metric("entraredis.connection.reauths"), reauths+1)
	calls := metric("entraredis.credential.duration")
	assert.True(t, calls == refreshes || calls == refreshes+1, "one credential call per token (one may be in flight): %d calls, %d refreshes", calls, refreshes)
	assert.GreaterOrEqual(t, metric("entraredis.connection.dials"), 4, "one per worker, more if connections were retired")
	assert.Regexp(t, `(?m)^  entraredis\.token\.time_to_expiry\s+\d+\.\d s$`, out)
	_, plain, _ := cli(t, "", "demo", "--duration", "1s", "--lifetime", "1s", "--workers", "1")
	assert.NotContains(t, plain, "metrics (OpenTelemetry", "only with --metrics")
	testutil.WaitGoroutines(t, base)
}

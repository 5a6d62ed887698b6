package main

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// TestDemoCounterCheckCatchesLostAndDoubledINCRs: the demo's verdict rests on its counter check
// (each counter equal to its acknowledged INCRs). While the workload runs, the test adds one INCR
// that no worker counted (as a command applied twice would) or takes one away (as a lost write
// would), on one counter: the demo must report that counter and fail.
func TestDemoCounterCheckCatchesLostAndDoubledINCRs(t *testing.T) {
	testutil.Slow(t)
	cases := []struct {
		name    string
		tamper  string // command applied once to one counter behind the workers' backs; "": none
		code    int
		equal   string // the counters row
		verdict string
	}{
		{"untouched", "", exitOK, "2/2 equal", "PASS"},
		{"an INCR applied twice", "incr", exitFailed, "1/2 equal", "FAIL"},
		{"an acknowledged INCR lost", "decr", exitFailed, "1/2 equal", "FAIL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			d, err := startDemo(demoConfig{duration: 1500 * time.Millisecond, lifetime: time.Hour, workers: 2, every: time.Hour})
			require.NoError(t, err)
			defer d.close()
			var out bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- d.run(context.Background(), &out) }()

			ctx := context.Background()
			var counters []string
			deadline := time.Now().Add(10 * time.Second)
			for len(counters) < 2 {
				require.True(t, time.Now().Before(deadline), "the workers' counters never appeared")
				time.Sleep(20 * time.Millisecond)
				counters, err = d.client.Keys(ctx, "entraredis:demo:*:counter:*").Result()
				require.NoError(t, err)
			}
			if tc.tamper != "" {
				require.NoError(t, d.client.Do(ctx, tc.tamper, counters[0]).Err())
			}
			var code int
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the demo did not end")
			}
			t.Log(out.String())
			assert.Equal(t, tc.code, code)
			assert.Regexp(t, `(?m)^  counters\s+`+tc.equal, out.String())
			assert.Regexp(t, `(?m)^`+tc.verdict+`$`, out.String())
			if tc.tamper != "" {
				assert.Regexp(t, `(?m)^\s+MISMATCH `+counters[0]+` = \d+, but \d+ INCRs were acknowledged`, out.String())
			}
			d.close()
			testutil.WaitGoroutines(t, base)
		})
	}
}

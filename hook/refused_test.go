package hook

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRefusedTokenBlocksUntilANewOne: the server refuses the token, and the one the refresh brings.
// Then commands and pipelines fail at once without reaching go-redis, the DialHook dials nothing,
// no more refreshes are made, and the error names the user and the fix with no token text. A new
// token (a real refresh) lifts the block: the next command is sent.
func TestRefusedTokenBlocksUntilANewOne(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	var events atomic.Int32
	h := newHook(src, &Options{Backoff: fastBackoff, OnEvent: func(e Event) {
		if e.Kind == EventGaveUp && errors.Is(e.Err, ErrTokenRefused) {
			events.Add(1)
		}
	}})
	tokens := []string{src.token()}
	next, calls := script(errWrongPass)
	err := h.ProcessHook(next)(context.Background(), incr())
	tokens = append(tokens, src.token())
	require.ErrorIs(t, err, ErrTokenRefused)
	require.ErrorIs(t, err, errWrongPass, "the server's reply is wrapped")
	var re *refusedError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, testOID, re.username)
	assert.Equal(t, []string{"https://redis.azure.com"}, re.audience)
	assert.False(t, re.expiresOn.IsZero())
	var reply redis.Error
	require.ErrorAs(t, err, &reply, "the server's reply, for errors.As")
	assert.Contains(t, err.Error(), "user "+testOID+" (audience https://redis.azure.com")
	assert.Equal(t, int32(2), calls.Load(), "sent twice: with the first token, then with the refreshed one")
	assert.Equal(t, 1, src.refreshCount())
	assert.Equal(t, int32(1), events.Load())
	holdRechecks(t, h) // the re-checks of the same token are TestLatePolicyRechecked's

	// Blocked: commands, pipelines and dials fail at once.
	for range 10 {
		cmd := incr()
		require.ErrorIs(t, h.ProcessHook(next)(context.Background(), cmd), ErrTokenRefused)
		require.ErrorIs(t, cmd.Err(), ErrTokenRefused)
	}
	pnext, pcalls := pipe(ok)
	cmds := []redis.Cmder{incr(), incr()}
	require.ErrorIs(t, h.ProcessPipelineHook(pnext)(context.Background(), cmds), ErrTokenRefused)
	var dials atomic.Int32
	dial := h.DialHook(func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("dialled")
	})
	_, err = dial(context.Background(), "tcp", "127.0.0.1:1")
	require.ErrorIs(t, err, ErrTokenRefused)
	assert.Equal(t, int32(2), calls.Load(), "no command sent with the refused token")
	assert.Zero(t, pcalls.Load(), "no pipeline sent with the refused token")
	assert.Zero(t, dials.Load(), "no dial for the refused token")
	assert.Equal(t, 1, src.refreshCount(), "no refresh forced while blocked")
	assert.Equal(t, uint64(13), h.Stats().Refused, "the first, 10 commands, the pipeline, the dial")
	assert.Equal(t, int32(1), events.Load(), "one event per refused token")
	for i, tok := range tokens {
		for _, part := range strings.Split(tok, ".") {
			assert.NotContains(t, err.Error(), part, "part of token %d in the error", i)
		}
	}

	// A new token: the first command probes it; meanwhile the others fail at once (no burst of
	// dials for a token as likely to be refused); its success lifts the block.
	require.NoError(t, src.Refresh(context.Background()))
	inProbe, release := make(chan struct{}), make(chan struct{})
	probeNext := func(ctx context.Context, cmd redis.Cmder) error {
		close(inProbe)
		<-release
		return nil
	}
	probeDone := make(chan error, 1)
	go func() { probeDone <- h.ProcessHook(probeNext)(context.Background(), incr()) }()
	recv(t, inProbe, "the first command on the new token probes it")
	next2, calls2 := script(nil)
	require.ErrorIs(t, h.ProcessHook(next2)(context.Background(), incr()), ErrTokenRefused, "during the probe")
	_, err = dial(context.Background(), "tcp", "127.0.0.1:1")
	require.ErrorContains(t, err, "dialled", "the probe's own dial goes through")
	close(release)
	require.NoError(t, recv(t, probeDone, "the probe's outcome"))
	require.NoError(t, h.ProcessHook(next2)(context.Background(), incr()))
	assert.Equal(t, int32(1), calls2.Load(), "sent once the probe succeeded")
}

// TestProbeRefusedBlocksTheNewToken: the probe of a new token is refused, and the token its
// refresh brings too: that one is blocked, and the probe fails with its error.
func TestProbeRefusedBlocksTheNewToken(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{Backoff: fastBackoff})
	next, _ := script(errWrongPass)
	require.ErrorIs(t, h.ProcessHook(next)(context.Background(), incr()), ErrTokenRefused)
	first := h.st.blocked.Load()
	require.NotNil(t, first)
	require.NoError(t, src.Refresh(context.Background()))
	next, calls := script(errWrongPass)
	require.ErrorIs(t, h.ProcessHook(next)(context.Background(), incr()), ErrTokenRefused)
	assert.Equal(t, int32(2), calls.Load(), "the probe, then once more with the token its refresh brought")
	cur := h.st.blocked.Load()
	require.NotNil(t, cur)
	info, _ := src.Token()
	assert.Equal(t, info.Generation, cur.gen, "the newest token is the blocked one")
	assert.NotSame(t, first, cur)
}

// TestRefusalRefreshesArePaced: many commands refused at once share one forced refresh, and
// another provider-wide refresh does not start within the pacing gap.
func TestRefusalRefreshesArePaced(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h1 := newHook(src, &Options{Backoff: fastBackoff, MaxRetries: -1})
	h2 := newHook(src, &Options{Backoff: fastBackoff})
	next, _ := script(errWrongPass, nil)
	// h1 never resends (MaxRetries -1): its refusal makes no refresh.
	require.ErrorIs(t, h1.ProcessHook(next)(context.Background(), incr()), errWrongPass)
	assert.Zero(t, src.refreshCount())
	next, _ = script(errWrongPass, nil)
	require.NoError(t, h2.ProcessHook(next)(context.Background(), incr()))
	assert.Equal(t, 1, src.refreshCount())
	// Refused again at once (another hook of the same provider): the refresh waits for the gap.
	h3 := newHook(src, &Options{Backoff: fastBackoff})
	start := time.Now()
	next, _ = script(errWrongPass, nil)
	require.NoError(t, h3.ProcessHook(next)(context.Background(), incr()))
	assert.Equal(t, 2, src.refreshCount())
	assert.GreaterOrEqual(t, time.Since(start), 400*time.Millisecond, "the second forced refresh waited for the pacing gap")
}

// TestStuckProbeHoldsBackForAMomentOnly: a probe that does not return (a blocking command) holds
// the other commands back for probeSpan at most; then another command probes.
func TestStuckProbeHoldsBackForAMomentOnly(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{Backoff: fastBackoff})
	next, _ := script(errWrongPass)
	require.ErrorIs(t, h.ProcessHook(next)(context.Background(), incr()), ErrTokenRefused)
	require.NoError(t, src.Refresh(context.Background()))
	inProbe, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go func() {
		_ = h.ProcessHook(func(ctx context.Context, cmd redis.Cmder) error {
			close(inProbe)
			<-release
			return nil
		})(context.Background(), incr())
	}()
	recv(t, inProbe, "the first command on the new token probes it")
	start := time.Now()
	next2, calls := script(nil)
	for h.ProcessHook(next2)(context.Background(), incr()) != nil {
		require.Less(t, time.Since(start), 5*time.Second, "no second probe")
		time.Sleep(10 * time.Millisecond)
	}
	held := time.Since(start)
	t.Logf("a stuck probe held the others back for %v", held.Round(time.Millisecond))
	assert.Equal(t, int32(1), calls.Load())
	assert.GreaterOrEqual(t, held, probeSpan*9/10, "held back while the probe runs")
	assert.Less(t, held, probeSpan+time.Second)
}

// recv receives from ch, failing t after 5 s: a test whose probe never starts must fail, not hang
// until the binary's timeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not within 5 s", what)
		panic("unreachable")
	}
}

// holdRechecks puts the next re-check of the blocked token out of reach.
func holdRechecks(t *testing.T, h *Hook) {
	t.Helper()
	r := h.st.blocked.Load()
	require.NotNil(t, r, "no token blocked")
	r.next.Store(math.MaxInt64)
}

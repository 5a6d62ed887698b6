package hook

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/resp"
)

// The refusal path at production behaviour: the credential hands back its cached token on every
// refresh (fakeSource.cached, as azidentity does for up to an hour), and the client's one
// connection is dialled with a handshake that passes through the hook, as go-redis sends it.

// fakeServer decides which tokens the cache accepts.
type fakeServer struct {
	refuseAll atomic.Bool // no access policy yet, or a failover refusing for a moment
	mu        sync.Mutex
	revoked   map[string]bool
	dials     atomic.Int32
	auths     atomic.Int32 // AUTH commands (re-checks)
	cmds      atomic.Int32 // other commands answered
}

func (s *fakeServer) accepts(pass string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.refuseAll.Load() && !s.revoked[pass]
}

func (s *fakeServer) revoke(pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked == nil {
		s.revoked = map[string]bool{}
	}
	s.revoked[pass] = true
}

// fakeClient is go-redis with one pooled connection in front of srv: dialled when there is none,
// its handshake (HELLO 3 AUTH user token) sent through the hook's ProcessHook; dropped by the
// server when its token is refused (go-redis then dials again, once).
type fakeClient struct {
	h   *Hook
	src *fakeSource
	srv *fakeServer
	mu  sync.Mutex
	tok string // the token the connection is authenticated with; "": no connection
}

func (c *fakeClient) conn() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok
}

func (c *fakeClient) setConn(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tok = tok
}

// dialWith dials a connection whose handshake carries pass.
func (c *fakeClient) dialWith(ctx context.Context, pass string) error {
	c.srv.dials.Add(1)
	hello := redis.NewMapStringInterfaceCmd(ctx, "hello", 3, "auth", testOID, pass)
	err := c.h.ProcessHook(func(ctx context.Context, cmd redis.Cmder) error {
		if !c.srv.accepts(pass) {
			cmd.SetErr(errWrongPass)
			return errWrongPass
		}
		return nil
	})(ctx, hello)
	if err != nil {
		return fmt.Errorf("failed to authenticate: %w", err) // go-redis's wrapping
	}
	c.setConn(pass)
	return nil
}

// next is the client's innermost ProcessHook.
func (c *fakeClient) next(ctx context.Context, cmd redis.Cmder) error {
	for attempt := 0; ; attempt++ {
		tok := c.conn()
		if tok != "" && !c.srv.accepts(tok) {
			c.setConn("") // the server dropped it
			tok = ""
		}
		if tok == "" {
			_, pass, err := c.src.CredentialsProviderContext(ctx)
			if err == nil {
				err = c.dialWith(ctx, pass)
			}
			if err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		if cmd.Name() == "auth" {
			c.srv.auths.Add(1)
			args := cmd.Args()
			pass, _ := args[len(args)-1].(string)
			if !c.srv.accepts(pass) {
				cmd.SetErr(errWrongPass)
				return errWrongPass
			}
			c.setConn(pass)
			return nil
		}
		c.srv.cmds.Add(1)
		if ic, ok := cmd.(*redis.IntCmd); ok {
			ic.SetVal(1)
		}
		return nil
	}
}

func newCachedRig(t *testing.T) (*Hook, *fakeSource, *fakeServer, *fakeClient) {
	t.Helper()
	src := newFakeSource(t, time.Hour)
	src.cached = true
	h := newHook(src, &Options{Backoff: fastBackoff})
	srv := &fakeServer{}
	return h, src, srv, &fakeClient{h: h, src: src, srv: srv}
}

// untilOK sends INCR until one succeeds or d passes; it returns the time taken and the last error.
func untilOK(h *Hook, next redis.ProcessHook, d time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		err := h.ProcessHook(next)(context.Background(), incr())
		if err == nil || time.Since(start) > d {
			return time.Since(start), err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLatePolicyRechecked: the cache refuses the identity from the start (its access policy is
// not effective yet), and the credential hands back the same cached token: the token is blocked
// after one refresh, commands fail at once without a dial or a credential call, and re-checks
// (AUTH with the same token) come at growing intervals. Once the cache accepts, the next re-check
// lifts the block, well within a second here (the re-checks are 250 ms, 500 ms, 1 s... apart).
func TestLatePolicyRechecked(t *testing.T) {
	h, src, srv, c := newCachedRig(t)
	srv.refuseAll.Store(true)
	err := h.ProcessHook(c.next)(context.Background(), incr())
	require.ErrorIs(t, err, ErrTokenRefused)
	assert.Equal(t, 1, src.refreshCount(), "one paced refresh, which brought the same token")
	assert.Contains(t, err.Error(), "re-checks this token")
	assert.True(t, h.Stats().Blocked)

	start := time.Now()
	fails := 0
	for time.Since(start) < 1200*time.Millisecond {
		t0 := time.Now()
		require.ErrorIs(t, h.ProcessHook(c.next)(context.Background(), incr()), ErrTokenRefused)
		require.Less(t, time.Since(t0), 100*time.Millisecond, "a blocked command fails at once")
		fails++
		time.Sleep(2 * time.Millisecond)
	}
	rechecks := h.Stats().Rechecks
	t.Logf("1.2 s blocked: %d commands failed, %d re-checks, %d dials, %d refreshes", fails, rechecks, srv.dials.Load(), src.refreshCount())
	assert.Equal(t, 1, src.refreshCount(), "no credential call while blocked")
	assert.GreaterOrEqual(t, rechecks, uint64(2), "re-checks at 250 ms, then 500 ms")
	assert.LessOrEqual(t, rechecks, uint64(3))
	assert.LessOrEqual(t, int64(srv.dials.Load()), int64(2+rechecks), "dials: the first, its resend, one per re-check")
	assert.Zero(t, srv.cmds.Load())

	srv.refuseAll.Store(false) // the policy is effective: the same token is accepted now
	took, err := untilOK(h, c.next, 5*time.Second)
	require.NoError(t, err, "the block outlived its cause")
	t.Logf("the cache accepts: first INCR %v later", took.Round(time.Millisecond))
	assert.Less(t, took, 2*time.Second)
	assert.False(t, h.Stats().Blocked)
	assert.Equal(t, 1, src.refreshCount())
}

// TestTransientRefusalAfterWork: the token was accepted (2 commands), then the server drops the
// connection and refuses for a moment: the refused token gets a paced refresh (the same token)
// and one resend, refused too: then it is blocked and re-checked, and the first acceptance lifts
// the block.
func TestTransientRefusalAfterWork(t *testing.T) {
	h, src, srv, c := newCachedRig(t)
	for range 2 {
		require.NoError(t, h.ProcessHook(c.next)(context.Background(), incr()))
	}
	srv.refuseAll.Store(true)
	dials := srv.dials.Load()
	err := h.ProcessHook(c.next)(context.Background(), incr())
	require.ErrorIs(t, err, ErrTokenRefused)
	assert.Equal(t, 1, src.refreshCount())
	assert.Equal(t, int32(2), srv.dials.Load()-dials, "the refused dial and its one resend")
	assert.Equal(t, uint64(1), h.Stats().AuthRetries)
	time.Sleep(300 * time.Millisecond) // refused for a while: the first re-check is due
	srv.refuseAll.Store(false)
	took, err := untilOK(h, c.next, 5*time.Second)
	require.NoError(t, err)
	t.Logf("accepted again: first INCR %v later, %d re-checks", took.Round(time.Millisecond), h.Stats().Rechecks)
	assert.Less(t, took, 2*time.Second)
}

// TestTwoRevocations: the server accepts a token, then revokes it (drops the connection, refuses
// it); the credential has a new one by then. Each revocation gets a refresh and a resend, the
// second as the first: a token accepted before is never blocked at its first refusal.
func TestTwoRevocations(t *testing.T) {
	h, src, srv, c := newCachedRig(t)
	require.NoError(t, h.ProcessHook(c.next)(context.Background(), incr()))
	for i := range 2 {
		srv.revoke(src.token())
		src.cached = false // the credential has a new token now
		err := h.ProcessHook(c.next)(context.Background(), incr())
		require.NoError(t, err, "revocation %d", i+1)
		src.cached = true
	}
	assert.Equal(t, 2, src.refreshCount())
	assert.False(t, h.Stats().Blocked)
}

// TestRefusalOnOlderTokenBlamesIt: the connection was dialled with an older token, which the
// server refuses (revoked); the provider has a newer one the server never refused. The refusal is
// charged to the older token: no refresh, no block, and the command is sent again on the newer.
func TestRefusalOnOlderTokenBlamesIt(t *testing.T) {
	h, src, srv, c := newCachedRig(t)
	require.NoError(t, h.ProcessHook(c.next)(context.Background(), incr()))
	old := src.token()
	require.NoError(t, src.mint()) // the provider's newer token
	srv.revoke(old)
	// go-redis's connection on the old token is dropped, and the dial it makes at once still
	// carries the old token (fetched before the provider stored the new one).
	c.setConn("")
	once := atomic.Bool{}
	next := func(ctx context.Context, cmd redis.Cmder) error {
		if once.CompareAndSwap(false, true) {
			err := c.dialWith(ctx, old)
			cmd.SetErr(err)
			return err
		}
		return c.next(ctx, cmd)
	}
	require.NoError(t, h.ProcessHook(next)(context.Background(), incr()))
	assert.Zero(t, src.refreshCount(), "no refresh: the current token was not refused")
	assert.False(t, h.Stats().Blocked)
}

// TestRecheckAfterGrows: re-checks start soon after the block and grow to at most maxRecheck
// apart, each shortened by up to a quarter.
func TestRecheckAfterGrows(t *testing.T) {
	prev := time.Duration(0)
	for n := range 12 {
		d := recheckAfter(n)
		want := min(firstRecheck<<min(n, 10), maxRecheck)
		assert.LessOrEqual(t, d, want, "re-check %d", n)
		assert.Greater(t, d, want*3/4-1, "re-check %d", n)
		if want < maxRecheck {
			assert.Greater(t, want, prev)
		}
		prev = want
	}
}

// TestPanickingRefreshDoesNotWedgeThePacer: a refresh that panics ends its pacing entry, so the
// next refusal's refresh runs (bounded: it must not wait forever).
func TestPanickingRefreshDoesNotWedgeThePacer(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{Backoff: fastBackoff})
	src.panicNext = true
	next, _ := script(errWrongPass, nil)
	func() {
		defer func() { assert.NotNil(t, recover(), "the refresh panicked through") }()
		_ = h.ProcessHook(next)(context.Background(), incr())
	}()
	done := make(chan error, 1)
	go func() {
		next, _ := script(errWrongPass, nil)
		done <- h.ProcessHook(next)(context.Background(), incr())
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the refusal after a panicking refresh waits for it forever")
	}
}

// TestStateNotKeepingProviderAlive: the state the hooks of a provider share is keyed weakly: once
// the provider (here a source) and its hooks are dropped, the entry goes.
func TestStateNotKeepingProviderAlive(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h1, h2 := newHook(src, nil), newHook(src, nil)
	require.Same(t, h1.st, h2.st, "one state per provider")
	other := newHook(newFakeSource(t, time.Hour), nil)
	require.NotSame(t, h1.st, other.st)
	gone := make(chan struct{})
	runtime.AddCleanup(src, func(ch chan struct{}) { close(ch) }, gone)
	src, h1, h2 = nil, nil, nil
	require.Eventually(t, func() bool {
		runtime.GC()
		select {
		case <-gone:
			return true
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "the source stays reachable")
}

// TestInPlaceAcceptanceLiftsTheBlock: the guard's AUTH with the blocked token, answered +OK on an
// open connection (on an older token), lifts the block at once, with no re-check.
func TestInPlaceAcceptanceLiftsTheBlock(t *testing.T) {
	h, _, srv, c := newCachedRig(t)
	srv.refuseAll.Store(true)
	require.ErrorIs(t, h.ProcessHook(c.next)(context.Background(), incr()), ErrTokenRefused)
	holdRechecks(t, h)
	_, pass, err := h.src.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	other := &creds{exp: time.Now().Add(time.Hour).UnixNano(), req: resp.AppendRequest(nil, "auth", testOID, "another token")}
	gc := &conn{g: &h.g}
	gc.renewed(true, other)
	assert.True(t, h.Stats().Blocked, "another token's acceptance lifts nothing")
	gc.renewed(true, &creds{exp: time.Now().Add(time.Hour).UnixNano(), req: resp.AppendRequest(nil, "auth", testOID, pass)})
	assert.False(t, h.Stats().Blocked, "the guard's AUTH with the blocked token was answered +OK")
	srv.refuseAll.Store(false)
	require.NoError(t, h.ProcessHook(c.next)(context.Background(), incr()))
	assert.Zero(t, h.Stats().Rechecks)
}

// TestPubSubAcceptanceLiftsTheBlock: a pub/sub connection renewed with the blocked token (a RESP3
// subscriber's AUTH in place answered +OK, or a RESP2 subscriber moved to a connection that
// authenticated with it) is the server accepting it: the block ends, as for any other connection.
func TestPubSubAcceptanceLiftsTheBlock(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(map[bool]string{false: "in place", true: "moved"}[moved], func(t *testing.T) {
			h, _, srv, c := newCachedRig(t)
			srv.refuseAll.Store(true)
			require.ErrorIs(t, h.ProcessHook(c.next)(context.Background(), incr()), ErrTokenRefused)
			holdRechecks(t, h)
			_, pass, err := h.src.CredentialsProviderContext(context.Background())
			require.NoError(t, err)
			gc := &conn{g: &h.g, Conn: &discard{}}
			gc.pubsubRenewed(&creds{exp: time.Now().Add(time.Hour).UnixNano(), req: resp.AppendRequest(nil, "auth", testOID, "another token")}, moved)
			assert.True(t, h.Stats().Blocked, "another token's acceptance lifts nothing")
			gc.pubsubRenewed(&creds{exp: time.Now().Add(time.Hour).UnixNano(), req: resp.AppendRequest(nil, "auth", testOID, pass)}, moved)
			assert.False(t, h.Stats().Blocked, "the blocked token renewed a pub/sub connection")
		})
	}
}

// TestPipelineRechecks: a pipeline re-checks a blocked token with an AUTH of its own before it is
// sent (and is sent once the cache accepts); a MULTI/EXEC never carries the re-check (go-redis
// reads its replies as MULTI ... EXEC) and fails at once.
func TestPipelineRechecks(t *testing.T) {
	h, _, srv, c := newCachedRig(t)
	srv.refuseAll.Store(true)
	require.ErrorIs(t, h.ProcessHook(c.next)(context.Background(), incr()), ErrTokenRefused)
	var sent atomic.Int32
	pnext := func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if cmd.Name() != "auth" {
				sent.Add(1)
			}
			if err := c.next(ctx, cmd); err != nil {
				return err
			}
		}
		return nil
	}
	srv.refuseAll.Store(false)
	r := h.st.blocked.Load()
	require.NotNil(t, r)
	r.next.Store(0) // a re-check is due
	multi := []redis.Cmder{redis.NewStatusCmd(context.Background(), "multi"), incr(), redis.NewSliceCmd(context.Background(), "exec")}
	require.ErrorIs(t, h.ProcessPipelineHook(pnext)(context.Background(), multi), ErrTokenRefused, "no re-check in a transaction")
	assert.Zero(t, h.Stats().Rechecks)
	require.NoError(t, h.ProcessPipelineHook(pnext)(context.Background(), []redis.Cmder{incr(), incr()}))
	assert.Equal(t, uint64(1), h.Stats().Rechecks)
	assert.Equal(t, int32(2), sent.Load(), "the pipeline, after the AUTH")
	assert.False(t, h.Stats().Blocked)
}

// TestRechecksOncePerProvider: two hooks of one provider (two clients) share the block and its
// re-checks: over 1.2 s blocked, at most 3 re-checks in all (250 ms, then 500 ms apart), not 3 per
// hook; and the acceptance one hook sees lifts the block for the other.
func TestRechecksOncePerProvider(t *testing.T) {
	h1, src, srv, c1 := newCachedRig(t)
	h2 := newHook(src, &Options{Backoff: fastBackoff})
	c2 := &fakeClient{h: h2, src: src, srv: srv}
	srv.refuseAll.Store(true)
	require.ErrorIs(t, h1.ProcessHook(c1.next)(context.Background(), incr()), ErrTokenRefused)
	require.True(t, h2.Stats().Blocked, "the block is the provider's")
	for start := time.Now(); time.Since(start) < 1200*time.Millisecond; time.Sleep(2 * time.Millisecond) {
		_ = h1.ProcessHook(c1.next)(context.Background(), incr())
		_ = h2.ProcessHook(c2.next)(context.Background(), incr())
	}
	total := h1.Stats().Rechecks + h2.Stats().Rechecks
	t.Logf("two hooks, 1.2 s blocked: %d + %d re-checks", h1.Stats().Rechecks, h2.Stats().Rechecks)
	assert.GreaterOrEqual(t, total, uint64(2))
	assert.LessOrEqual(t, total, uint64(3))
	assert.Equal(t, 1, src.refreshCount())
	srv.refuseAll.Store(false)
	_, err := untilOK(h1, c1.next, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, h2.ProcessHook(c2.next)(context.Background(), incr()), "lifted for the other hook too")
}

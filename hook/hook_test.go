package hook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// redisErr is a server reply error, as go-redis returns them (a type with a RedisError method).
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

const (
	errNoAuth     = redisErr("NOAUTH Authentication required.")
	errWrongPass  = redisErr("WRONGPASS invalid username-password pair or user is disabled.")
	errAzureWrong = redisErr("ERR WRONGPASS invalid username-password pair")
	errSyntax     = redisErr("ERR syntax error")
	errNoPerm     = redisErr("NOPERM this user has no permissions to run the 'set' command")
)

var errDial = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}

// fakeSource stands in for the provider: a new token per Refresh, or, with cached set, the same
// token again, as azidentity's credentials hand back their cached token until it nears expiry.
type fakeSource struct {
	life      time.Duration
	cached    bool // Refresh brings the same token (set before use, or between calls)
	panicNext bool // the next Refresh panics

	mu         sync.Mutex
	pass       string
	exp        time.Time
	refreshAt  time.Time
	gen        uint64
	refreshes  int
	refreshErr error
	listener   auth.CredentialsListener
}

func newFakeSource(t testing.TB, life time.Duration) *fakeSource {
	t.Helper()
	s := &fakeSource{life: life}
	require.NoError(t, s.mint())
	return s
}

const testOID = "6f1c2b7a-4e2d-4c1b-9a6e-0c1d2e3f4a5b"

// mintToken makes an Entra-shaped RS256 token (exp rounded up to a whole second, as Entra's).
func mintToken(life time.Duration) (string, time.Time, error) {
	now := time.Now()
	exp := time.Unix(now.Add(life+time.Second-1).Unix(), 0)
	var jti [8]byte
	_, _ = rand.Read(jti[:])
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"oid": testOID, "sub": testOID, "aud": "https://redis.azure.com", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": exp.Unix(), "jti": hex.EncodeToString(jti[:]),
	})
	tok, err := t.SignedString(testKey(nil))
	return tok, exp, err
}

func (s *fakeSource) mint() error {
	tok, exp, err := mintToken(s.life)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pass, s.exp, s.refreshAt = tok, exp, time.Now().Add(s.life/2)
	s.gen++
	s.mu.Unlock()
	return nil
}

func (s *fakeSource) CredentialsProviderContext(context.Context) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return testOID, s.pass, nil
}

func (s *fakeSource) Refresh(context.Context) error {
	s.mu.Lock()
	s.refreshes++
	err, cached, panics := s.refreshErr, s.cached, s.panicNext
	s.panicNext = false
	s.mu.Unlock()
	if panics {
		panic("entraredis test: the refresh panicked")
	}
	if err != nil || cached {
		return err // cached: served from the credential's cache, nothing new to store
	}
	if err := s.mint(); err != nil {
		return err
	}
	s.mu.Lock()
	l := s.listener
	s.mu.Unlock()
	if l != nil {
		l.OnNext(fakeCreds{testOID, s.token()})
	}
	return nil
}

// waitSubscribed waits until the guard has subscribed (it does so in the background after a
// first handshake), so that the next Refresh reaches it.
func (s *fakeSource) waitSubscribed(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.listener != nil
	}, 5*time.Second, time.Millisecond)
}

type fakeCreds struct{ user, pass string }

func (c fakeCreds) BasicAuth() (string, string) { return c.user, c.pass }
func (c fakeCreds) RawCredentials() string      { return c.user + ":" + c.pass }

func (s *fakeSource) Subscribe(l auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listener = l
	return fakeCreds{testOID, s.pass}, func() error {
		s.mu.Lock()
		s.listener = nil
		s.mu.Unlock()
		return nil
	}, nil
}

func (s *fakeSource) Token() (provider.TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return provider.TokenInfo{ExpiresOn: s.exp, RefreshAt: s.refreshAt, Generation: s.gen}, time.Now().Before(s.exp)
}

func (s *fakeSource) token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pass
}

func (s *fakeSource) refreshCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

var fastBackoff = retry.Policy{InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

// script returns a fake next that fails the i-th call with errs[i] (nil: success, value 42) and
// the calls beyond len(errs) with the last one.
func script(errs ...error) (redis.ProcessHook, *atomic.Int32) {
	var calls atomic.Int32
	return func(ctx context.Context, cmd redis.Cmder) error {
		i := int(calls.Add(1)) - 1
		err := errs[min(i, len(errs)-1)]
		if err == nil {
			if c, ok := cmd.(*redis.IntCmd); ok {
				c.SetVal(42)
			}
		}
		cmd.SetErr(err)
		return err
	}, &calls
}

func TestProcessHookRetryRules(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int
		cmd        func() redis.Cmder
		errs       []error
		wantCalls  int32
		wantErr    error
		refreshes  int
	}{
		{"auth error once, then ok", 0, incr, []error{errWrongPass, nil}, 2, nil, 1},
		{"NOAUTH once, then ok", 0, incr, []error{errNoAuth, nil}, 2, nil, 1},
		{"Azure's ERR WRONGPASS", 0, incr, []error{errAzureWrong, nil}, 2, nil, 1},
		{"auth error every time: the new token refused too, blocked", 0, incr, []error{errWrongPass}, 2, ErrTokenRefused, 1},
		{"MaxRetries 1", 1, incr, []error{errWrongPass}, 2, errWrongPass, 1},
		{"MaxRetries -1: no retry", -1, incr, []error{errWrongPass, nil}, 1, errWrongPass, 0},
		{"ERR syntax: no retry", 0, incr, []error{errSyntax, nil}, 1, errSyntax, 0},
		{"NOPERM: no retry", 0, incr, []error{errNoPerm, nil}, 1, errNoPerm, 0},
		{"EOF after the write: fate unknown, no retry", 0, incr, []error{io.EOF, nil}, 1, io.EOF, 0},
		{"redis.Nil is an answer", 0, get, []error{redis.Nil, nil}, 1, redis.Nil, 0},
		{"dial failure: retried", 0, incr, []error{errDial, nil}, 2, nil, 0},
		{"no token in the handshake: retried", 0, incr, []error{fmt.Errorf("%w: %w", provider.ErrTokenUnavailable, errors.New("idp down")), nil}, 2, nil, 0},
		{"retired connection: retried", 0, incr, []error{ErrConnRetired, nil}, 2, nil, 0},
		{"retired connections do not use the budget", -1, incr, []error{ErrConnRetired, ErrConnRetired, nil}, 3, nil, 0},
		{"retired, then auth error, then ok", 0, incr, []error{ErrConnRetired, errWrongPass, nil}, 3, nil, 1},
		{"HELLO of the handshake is not retried", 0, hello, []error{errWrongPass, nil}, 1, errWrongPass, 0},
		{"AUTH of a re-authentication is not retried", 0, authCmd, []error{errWrongPass, nil}, 1, errWrongPass, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource(t, time.Hour) // its own: forced refreshes are paced per provider
			before := src.refreshCount()
			h := newHook(src, &Options{MaxRetries: tt.maxRetries, Backoff: fastBackoff})
			next, calls := script(tt.errs...)
			cmd := tt.cmd()
			err := h.ProcessHook(next)(context.Background(), cmd)
			assert.Equal(t, tt.wantCalls, calls.Load(), "calls of next")
			assert.Equal(t, tt.refreshes, src.refreshCount()-before, "refreshes")
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.NoError(t, cmd.Err())
				assert.Equal(t, int64(42), cmd.(*redis.IntCmd).Val(), "the retried command carries the new result")
			} else {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorIs(t, cmd.Err(), tt.wantErr)
			}
		})
	}
}

func incr() redis.Cmder    { return redis.NewIntCmd(context.Background(), "incr", "k") }
func get() redis.Cmder     { return redis.NewStringCmd(context.Background(), "get", "k") }
func hello() redis.Cmder   { return redis.NewMapStringInterfaceCmd(context.Background(), "hello", "3") }
func authCmd() redis.Cmder { return redis.NewStatusCmd(context.Background(), "auth", "u", "p") }

func TestProcessHookGivesUpWhenRefreshFails(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	src.refreshErr = errors.New("identity provider down")
	h := newHook(src, &Options{Backoff: fastBackoff})
	next, calls := script(errWrongPass)
	err := h.ProcessHook(next)(context.Background(), incr())
	require.ErrorIs(t, err, errWrongPass, "the caller sees the server's answer, not the refresh failure")
	require.ErrorIs(t, err, ErrTokenRefused, "no other token: the refused one is blocked")
	assert.Equal(t, int32(1), calls.Load(), "not sent again with the refused token")
	assert.Equal(t, uint64(1), h.Stats().Refused)
}

func TestProcessHookStopsWhenContextEnds(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{Backoff: retry.Policy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	next, calls := script(errWrongPass)
	start := time.Now()
	err := h.ProcessHook(next)(ctx, incr())
	require.ErrorIs(t, err, errWrongPass)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, int32(2), calls.Load(), "the first retry is immediate, the second waits for the backoff")
}

// pipe returns a fake pipeline next whose i-th call applies steps[i] (the last one beyond).
func pipe(steps ...func(cmds []redis.Cmder) error) (redis.ProcessPipelineHook, *atomic.Int32) {
	var calls atomic.Int32
	return func(ctx context.Context, cmds []redis.Cmder) error {
		i := int(calls.Add(1)) - 1
		return steps[min(i, len(steps)-1)](cmds)
	}, &calls
}

func allErr(err error) func([]redis.Cmder) error {
	return func(cmds []redis.Cmder) error {
		for _, c := range cmds {
			c.SetErr(err)
		}
		return err
	}
}

// handshakeErr fails a pipeline before any command ran: go-redis returns the error without
// stamping it on the commands when it is a server reply (WRONGPASS from HELLO/AUTH).
func handshakeErr(err error) func([]redis.Cmder) error {
	return func([]redis.Cmder) error { return err }
}

func ok(cmds []redis.Cmder) error {
	for i, c := range cmds {
		if ic, ok := c.(*redis.IntCmd); ok {
			ic.SetVal(int64(i + 1))
		}
		c.SetErr(nil)
	}
	return nil
}

func firstOKThen(err error) func([]redis.Cmder) error {
	return func(cmds []redis.Cmder) error {
		for i, c := range cmds {
			if i == 0 {
				c.SetErr(nil)
				continue
			}
			c.SetErr(err)
		}
		return err
	}
}

func TestProcessPipelineHookRetryRules(t *testing.T) {
	tests := []struct {
		name      string
		tx        bool
		steps     []func([]redis.Cmder) error
		wantCalls int32
		wantErr   error
	}{
		{"handshake rejected the token", false, []func([]redis.Cmder) error{handshakeErr(errWrongPass), ok}, 2, nil},
		{"every command NOAUTH", false, []func([]redis.Cmder) error{allErr(errNoAuth), ok}, 2, nil},
		{"MULTI/EXEC, every command NOAUTH", true, []func([]redis.Cmder) error{allErr(errAzureWrong), ok}, 2, nil},
		{"some commands answered: they may have run", false, []func([]redis.Cmder) error{firstOKThen(errNoAuth), ok}, 1, errNoAuth},
		{"auth error every time: the new token refused too, blocked", false, []func([]redis.Cmder) error{allErr(errWrongPass)}, 2, ErrTokenRefused},
		{"retired connection", false, []func([]redis.Cmder) error{allErr(ErrConnRetired), ok}, 2, nil},
		{"EOF: fate unknown", false, []func([]redis.Cmder) error{allErr(io.ErrUnexpectedEOF), ok}, 1, io.ErrUnexpectedEOF},
		{"syntax error", false, []func([]redis.Cmder) error{firstOKThen(errSyntax), ok}, 1, errSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHook(newFakeSource(t, time.Hour), &Options{Backoff: fastBackoff})
			next, calls := pipe(tt.steps...)
			ctx := context.Background()
			cmds := []redis.Cmder{redis.NewIntCmd(ctx, "incr", "a"), redis.NewIntCmd(ctx, "incr", "b")}
			if tt.tx {
				cmds = append([]redis.Cmder{redis.NewStatusCmd(ctx, "multi")}, append(cmds, redis.NewSliceCmd(ctx, "exec"))...)
			}
			err := h.ProcessPipelineHook(next)(ctx, cmds)
			assert.Equal(t, tt.wantCalls, calls.Load(), "calls of next")
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			for _, c := range cmds {
				require.NoError(t, c.Err())
			}
		})
	}
}

func TestPipelineWithHandshakeCommandsIsNotRetried(t *testing.T) {
	h := newHook(newFakeSource(t, time.Hour), &Options{Backoff: fastBackoff})
	next, calls := pipe(allErr(errNoAuth), ok)
	ctx := context.Background()
	cmds := []redis.Cmder{redis.NewStatusCmd(ctx, "select", 1), redis.NewStatusCmd(ctx, "client", "setname", "x")}
	require.ErrorIs(t, h.ProcessPipelineHook(next)(ctx, cmds), errNoAuth)
	assert.Equal(t, int32(1), calls.Load())
}

func TestEventsAndLogsNeverHoldTheToken(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	var buf bytes.Buffer
	var events []Event
	h := newHook(src, &Options{
		Backoff: fastBackoff,
		Logger:  slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnEvent: func(e Event) { events = append(events, e) },
	})
	tokens := []string{src.token()}
	next, _ := script(errWrongPass, ErrConnRetired, errWrongPass, errWrongPass, errWrongPass)
	require.Error(t, h.ProcessHook(next)(context.Background(), incr()))
	tokens = append(tokens, src.token())

	// A guarded connection retired on its token: the retirement event and log line.
	c := h.g.wrap(newFakeConn(), nil).(*conn)
	writeAuth(t, c, "user", src.token())
	reply(t, c, "+OK\r\n")
	h.g.raise(&h.g.dead, time.Now().Add(24*time.Hour).UnixNano())
	_, err := c.Write(getReq)
	require.ErrorIs(t, err, ErrConnRetired)

	require.NotEmpty(t, events)
	kinds := map[EventKind]bool{}
	var all strings.Builder
	for _, e := range events {
		kinds[e.Kind] = true
		fmt.Fprintf(&all, "%+v %v %s\n", e, e.Err, e.Kind)
	}
	assert.True(t, kinds[EventRetry] && kinds[EventGaveUp] && kinds[EventConnRetired], "kinds seen: %v", kinds)
	require.NotZero(t, buf.Len())
	for i, tok := range tokens {
		assert.False(t, strings.Contains(buf.String(), tok), "token %d appears in the log", i)
		assert.False(t, strings.Contains(all.String(), tok), "token %d appears in an event", i)
		assert.False(t, strings.Contains(buf.String(), tok[strings.LastIndexByte(tok, '.')+1:]), "signature %d appears in the log", i)
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{EventRetry: "retry", EventGaveUp: "gave up", EventConnRetired: "connection retired", EventPubSubReauth: "pub/sub re-authenticated", 99: "EventKind(99)"} {
		assert.Equal(t, want, k.String())
	}
}

func TestNewPanicsOnNilProvider(t *testing.T) {
	assert.PanicsWithValue(t, "entraredis: hook.New: the provider is nil: create one with provider.New(cred, nil) or provider.NewDefault(nil, nil)", func() { New(nil, nil) })
}

type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, exp, err := mintToken(time.Hour)
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, err
}

func TestNewWithProvider(t *testing.T) {
	p, err := provider.New(staticCred{}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	h := New(p, nil)
	cpc, scp := h.Credentials()
	require.NotNil(t, cpc)
	assert.Nil(t, scp, "the guard renews open connections: no streaming credentials")
	assert.Equal(t, 3, h.maxRetries)
	assert.Equal(t, defaultGuardMargin, h.margin)
	assert.Equal(t, defaultKeepAlive, h.keepAlive)
	require.NoError(t, h.Close())
	off := New(p, &Options{GuardMargin: -1, KeepAlive: -1})
	_, scp = off.Credentials()
	assert.Same(t, p, scp, "guard off: go-redis's streaming re-authentication")
	assert.Zero(t, off.keepAlive)
}

func TestHooksDoNotAllocateOnSuccess(t *testing.T) {
	h := newHook(newFakeSource(t, time.Hour), nil)
	ph := h.ProcessHook(func(context.Context, redis.Cmder) error { return nil })
	pph := h.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { return nil })
	ctx := context.Background()
	cmd := incr()
	cmds := []redis.Cmder{cmd}
	nilReply := h.ProcessHook(func(context.Context, redis.Cmder) error { return redis.Nil })
	allocs := testing.AllocsPerRun(1000, func() {
		_ = ph(ctx, cmd)
		_ = pph(ctx, cmds)
		_ = nilReply(ctx, cmd)
	})
	assert.Zero(t, allocs)
}

// BenchmarkProcessHook is the hook's cost per command on the success path.
func BenchmarkProcessHook(b *testing.B) {
	next := func(context.Context, redis.Cmder) error { return nil }
	ctx := context.Background()
	cmd := incr()
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = next(ctx, cmd)
		}
	})
	b.Run("hooked", func(b *testing.B) {
		// A real provider with its token cached: the fake source's lock and clock read are not
		// the hook's cost.
		p, err := provider.New(staticCred{}, nil)
		require.NoError(b, err)
		b.Cleanup(func() { p.Close() })
		_, _, err = p.CredentialsProviderContext(ctx)
		require.NoError(b, err)
		ph := New(p, nil).ProcessHook(next) // as the root package makes it
		b.ReportAllocs()
		for b.Loop() {
			_ = ph(ctx, cmd)
		}
	})
}

// One logger option: a hook made without a Logger logs where its provider does.
func TestHookTakesTheProvidersLogger(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	p, err := provider.New(staticCred{}, &provider.Options{Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	assert.Same(t, logger, New(p, nil).log)
	assert.Same(t, logger, New(p, &Options{MaxRetries: 1}).log)
	own := slog.New(slog.DiscardHandler)
	assert.Same(t, own, New(p, &Options{Logger: own}).log, "the hook's own wins")
}

// TestResendOnFullDuplexKeepsTheRefusal: go-redis's full-duplex engine calls a process hook after
// the command was written, and its next only reports the reply already read (a second call sends
// nothing). The hook's resend after an auth error must then leave the server's refusal on the
// command, not report success with an empty value.
func TestResendOnFullDuplexKeepsTheRefusal(t *testing.T) {
	src := newFakeSource(t, time.Hour)
	h := newHook(src, &Options{Backoff: fastBackoff})
	var calls atomic.Int32
	next := func(_ context.Context, cmd redis.Cmder) error { // as fdEngine.hostHook's next
		calls.Add(1)
		return cmd.Err()
	}
	cmd := incr()
	cmd.SetErr(errWrongPass) // the reader set the server's reply before the hook's next returned
	err := h.ProcessHook(next)(context.Background(), cmd)
	assert.Equal(t, int32(2), calls.Load(), "the hook tried to send it again")
	require.Error(t, err, "a command the server refused is not reported as done")
	assert.Equal(t, errWrongPass.Error(), err.Error())
	assert.Equal(t, errWrongPass.Error(), cmd.Err().Error())
	assert.NotErrorIs(t, err, errNotSentAgain)
}

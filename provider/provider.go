// Package provider turns an azcore.TokenCredential into the credentials go-redis needs for Azure Cache
// for Redis and Azure Managed Redis: a cached Microsoft Entra ID token, refreshed in the background
// before it expires.
//
// For a user: make one provider per identity (New with any azidentity credential, or a constructor
// per kind: NewManagedIdentity, NewWorkloadIdentity, NewClientSecret, NewDefault, FromEnv for
// Service Connector's variables; a service principal's certificate file: package
// provider/certcred), Close it after the clients, and pass it to entraredis.NewClient, which adds
// the hook that renews open connections in place. Setting it alone as go-redis's
// StreamingCredentialsProvider also works, with less (go-redis redials busy pools at each
// rotation, pub/sub is not renewed): see docs/behaviour.md in the repository.
//
// It serves go-redis's CredentialsProviderContext (new connections) and
// auth.StreamingCredentialsProvider (Subscribe; SubscribeWithContext for go-redis v9.24 and
// later, which bounds the first fetch by the handshake's context).
//
// The username Azure expects is the identity's object ID; the provider reads it from the token's oid
// claim unless Options.Username is set. The password is the token itself: it never appears in an
// error, an event or a log line.
//
// When the identity provider fails, the provider makes one credential call at a time, paced (at
// most about 2 a second once no valid token is left, never before the identity provider's
// Retry-After), and answers callers with the last error in between; a credential that panics or
// ignores its context can neither crash nor hang it.
package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/retry"
)

// Scope is the OAuth 2.0 scope of Azure Cache for Redis and Azure Managed Redis.
const Scope = "https://redis.azure.com/.default"

var (
	// ErrClosed is returned by every method of a Provider after Close.
	ErrClosed = errors.New("provider: closed")
	// ErrTokenUnavailable is returned when no valid token is cached and fetching one failed; the error
	// also wraps the cause (the credential's error, or the caller's context error).
	ErrTokenUnavailable = errors.New("provider: no valid token")
	// ErrNoUsername is returned when a token has no oid claim and Options.Username is empty.
	ErrNoUsername = errors.New("provider: token has no oid claim: set Options.Username to the identity's object ID")
	// ErrExpiredToken is returned when the credential hands back a token that has already expired.
	ErrExpiredToken = errors.New("provider: credential returned an expired token: check the machine's clock and the credential's cache")
	// ErrFetchTimeout is the cause (wrapped in ErrTokenUnavailable) when a credential call has run
	// longer than Options.FetchTimeout: the credential ignores its context. No new call starts until
	// it returns.
	ErrFetchTimeout = errors.New("provider: the credential did not return within Options.FetchTimeout (it ignores its context): check the identity endpoint and the credential")
	// ErrCredentialPanicked is the cause (wrapped in ErrTokenUnavailable) when the credential
	// panicked; the error names the panic, with anything shaped like a token cut out.
	ErrCredentialPanicked = errors.New("provider: the credential panicked")
)

// Options configures a Provider. Zero fields mean defaults; a nil *Options means all defaults.
type Options struct {
	// Scopes requested from the credential; default []string{Scope}.
	Scopes []string
	// RefreshOffset: refresh when less than this remains of the token's life; default 5m, and never
	// less than 12s (for tokens under 2 minutes: a tenth of their life), the time azidentity's managed-identity retries (0.8, 2.4 and 5.6 s, jittered)
	// can take inside one credential call. When it is more than half the life (short-lived tokens in
	// tests, odd identity providers), the provider refreshes at 50-75% of the life instead, so it
	// never calls the credential in a tight loop.
	RefreshOffset time.Duration
	// RefreshJitter spreads the refreshes of a fleet: a random part of it is subtracted from the
	// refresh time; default 1m; negative: no jitter.
	RefreshJitter time.Duration
	// Username overrides the token's oid claim.
	Username string
	// FetchTimeout bounds each credential call, and the wait of a caller whose context has no
	// deadline; default 30s, room for azidentity's own retries of 429 and 5xx answers (0.8, 2.4
	// and 5.6 s for App Service, Functions and most credentials) and its Retry-After waits. On a VM
	// (IMDS) azidentity retries 6 times, 2 to 25 s apart, about 97 s in all: FetchTimeout cuts
	// that after the fourth request (22 s of backoff), and the provider's own pacing takes over. A credential that ignores its context and runs longer (by
	// more than half a second, the time to unwind) is abandoned by the callers: they get
	// ErrFetchTimeout, and no new call starts until it returns.
	FetchTimeout time.Duration
	// Retry sets the backoff after a failed fetch while the cached token is still valid; the
	// provider never gives up while it is open. Once no valid token
	// is left, attempts are at most 0.5 s apart (about 2 a second), so that the first command
	// after the identity provider's return succeeds soon. A Retry-After from the identity provider
	// (up to 60 s) delays the next attempt further. Between attempts callers get the last error at
	// once.
	Retry retry.Policy
	// Logger receives refresh, failure and recovery records; nil is silent.
	Logger *slog.Logger
	// OnEvent, when set, is called synchronously for each Event; keep it fast.
	OnEvent func(Event)
}

// EventKind says what happened to the provider's token.
type EventKind int

// The kinds of Event.
const (
	EventRefreshed     EventKind = iota + 1 // a new token is cached
	EventRefreshFailed                      // a fetch failed; the current token, if still valid, is kept
	EventRecovered                          // a fetch succeeded after one or more failures
	EventExpired                            // the cached token expired before a new one arrived
)

func (k EventKind) String() string {
	switch k {
	case EventRefreshed:
		return "refreshed"
	case EventRefreshFailed:
		return "refresh failed"
	case EventRecovered:
		return "recovered"
	case EventExpired:
		return "expired"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a change of the provider's token. It never holds the token.
type Event struct {
	Kind      EventKind
	ExpiresOn time.Time // of the token cached after the event, zero when none is valid
	Attempt   int       // consecutive failures so far (EventRefreshFailed), or before success (EventRecovered)
	Err       error     // the cause, for EventRefreshFailed
	// RetryAfter is the identity provider's Retry-After (EventRefreshFailed), capped at 60 s: no
	// credential call is made before it has elapsed. Zero when the answer had none.
	RetryAfter time.Duration
	// NextAttempt is the earliest time of the next credential call (EventRefreshFailed).
	NextAttempt time.Time
}

// Provider caches a token from an azcore.TokenCredential and refreshes it before it expires. It is
// safe for concurrent use. Close it when done: it stops the background refresh.
type Provider struct {
	cred  azcore.TokenCredential
	opts  Options
	valid atomic.Pointer[credentials] // nil when no token is cached or it has expired: the hot path is one load

	ctx    context.Context // ends at Close; bounds every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup // the background refresh loop

	mu       sync.Mutex
	closed   bool
	gen      uint64
	newest   *credentials // the latest token fetched, even if expired
	inflight *attempt     // the one credential call running, nil when none
	// Pacing: after a failure no call starts before lastEnd + backoff (capped at 0.5 s while no
	// token is valid) nor before retryAfter; meanwhile callers get lastErr.
	failures     int // consecutive failed fetches
	lastErr      error
	lastEnd      time.Time
	backoff      time.Duration
	quickBackoff time.Duration
	retryAfter   time.Time
	paced        atomic.Pointer[paced] // the same, for callers with no valid token, read without the lock
	refreshing   bool                  // a background refresh loop is running
	refreshTimer *time.Timer
	expiryTimer  *time.Timer
	subs         subscribers
}

func init() {
	link.ProviderLogger = func(p any) *slog.Logger { return p.(*Provider).opts.Logger }
}

// New returns a Provider that takes its tokens from cred. It does no I/O: the first caller fetches.
func New(cred azcore.TokenCredential, opts *Options) (*Provider, error) {
	if cred == nil {
		return nil, errors.New("provider: nil credential: pass an azidentity credential, e.g. azidentity.NewDefaultAzureCredential(nil)")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{Scope}
	}
	if o.RefreshOffset <= 0 {
		o.RefreshOffset = 5 * time.Minute
	}
	if o.RefreshJitter == 0 {
		o.RefreshJitter = time.Minute
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 30 * time.Second
	}
	p := &Provider{cred: cred, opts: o}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// CredentialsProviderContext returns the username and token for a new connection. With a valid token
// cached it is one atomic load; otherwise the caller fetches one (one credential call at a time,
// shared with concurrent callers), waiting until ctx ends or, with no deadline, FetchTimeout. After a
// failed fetch, until the next is due, it returns the last error at once. Its signature is go-redis's
// Options.CredentialsProviderContext.
func (p *Provider) CredentialsProviderContext(ctx context.Context) (username, password string, err error) {
	if c := p.valid.Load(); c != nil {
		return c.username, c.password, nil
	}
	c, err := p.fetch(ctx, false)
	if err != nil {
		return "", "", err
	}
	return c.username, c.password, nil
}

// Refresh fetches a new token now, sharing only a fetch already in flight. The hook calls it when
// the server rejects a token (paced, for all its hooks together). After a failed fetch it is paced
// like every caller: until the next attempt is due (the backoff, or the identity provider's
// Retry-After) it returns the last error at once, without calling the credential.
func (p *Provider) Refresh(ctx context.Context) error {
	_, err := p.fetch(ctx, true)
	return err
}

// TokenInfo describes the cached token without its secret.
type TokenInfo struct {
	Username   string
	ExpiresOn  time.Time
	RefreshAt  time.Time // when the background refresh is due
	Generation uint64    // increases with every token the provider caches
}

// Token returns the cached token's metadata without I/O; ok is false when none is cached or it has expired.
func (p *Provider) Token() (info TokenInfo, ok bool) {
	c := p.valid.Load()
	if c == nil {
		return TokenInfo{}, false
	}
	return TokenInfo{Username: c.username, ExpiresOn: c.expiresOn, RefreshAt: c.refreshAt, Generation: c.gen}, true
}

// Close stops the background refresh and ends every caller's wait. It cancels a credential call in
// flight and gives it up to half a second to return (azidentity's return as soon as their context
// ends), so that Close returns within a second whatever the credential does: one that ignores its
// context is abandoned, the logger says so, and its result is dropped when it returns (its
// goroutine ends then). Later calls of the provider's methods return ErrClosed; a second Close
// returns nil.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.valid.Store(nil)
	p.paced.Store(nil)
	stop(p.refreshTimer)
	stop(p.expiryTimer)
	p.subs = subscribers{}
	a := p.inflight
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	if a != nil {
		// A process being stopped has little time (Kubernetes gives a pod 30 s in all): a moment
		// for the call to unwind after its cancellation, not its FetchTimeout.
		t := time.NewTimer(closeWait)
		defer t.Stop()
		select {
		case <-a.done:
		case <-t.C:
			p.log(slog.LevelWarn, "entraredis: provider closed while a credential call is still running: the credential ignores its context; the call is abandoned, its result will be dropped, and its goroutine ends when it returns",
				slog.Duration("running_for", time.Since(a.start)))
		}
	}
	return nil
}

// closeWait is how long Close waits for a cancelled credential call to return.
const closeWait = 500 * time.Millisecond

// store publishes a new token, schedules its refresh and its expiry, and tells the listeners.
func (p *Provider) store(c *credentials, refreshOn time.Time) {
	now := time.Now()
	life := c.expiresOn.Sub(now)
	c.refreshAt = now.Add(p.refreshDelay(life, refreshOn, now))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.gen++
	c.gen = p.gen
	p.newest = c
	p.valid.Store(c)
	// Mark the token stale a little before it expires so that a late timer never lets the hot path
	// hand out an expired token.
	stop(p.expiryTimer)
	p.expiryTimer = time.AfterFunc(life-min(time.Second, life/10), func() { p.expire(c) })
	stop(p.refreshTimer)
	p.refreshTimer = time.AfterFunc(c.refreshAt.Sub(now), p.backgroundRefresh)
	failures := p.failures
	p.failures, p.lastErr, p.retryAfter = 0, nil, time.Time{}
	p.paced.Store(nil)
	ls := p.subs.snapshot()
	p.mu.Unlock()

	for _, l := range ls {
		l.OnNext(c)
	}
	attrs := []any{slog.Time("expires_on", c.expiresOn), slog.Time("refresh_at", c.refreshAt)}
	p.emit(Event{Kind: EventRefreshed, ExpiresOn: c.expiresOn}, slog.LevelDebug, "entraredis: token refreshed", attrs...)
	if failures > 0 {
		p.emit(Event{Kind: EventRecovered, ExpiresOn: c.expiresOn, Attempt: failures}, slog.LevelInfo,
			"entraredis: token refresh recovered", append(attrs, slog.Int("failed_attempts", failures))...)
	}
}

// credentialRetrySpan is how long azidentity's retries can make one credential call last: 0.8 +
// 2.4 + 5.6 s of backoff, up to 1.3 times that with its jitter, and the requests. The refresh
// starts at least this long before expiry (a tenth of the life for tokens under two minutes, which
// only tests and benchmarks use), so that the retries end before the token does. (IMDS's longer
// schedule, 2 to 25 s apart, needs the default RefreshOffset of 5 minutes, which it fits.)
const credentialRetrySpan = 12 * time.Second

// refreshDelay: ExpiresOn - max(RefreshOffset, credentialRetrySpan) - rand[0, RefreshJitter), or
// the credential's RefreshOn when sooner. An offset over half the life is replaced by 50-75% of the
// life: at most about two credential calls per token, whatever the configuration.
func (p *Provider) refreshDelay(life time.Duration, refreshOn, now time.Time) time.Duration {
	var d time.Duration
	if off := max(p.opts.RefreshOffset, min(credentialRetrySpan, life/10)); off <= life/2 {
		d = life - off - randN(min(p.opts.RefreshJitter, life/2-off))
	} else {
		d = life/2 + randN(life/4)
	}
	if !refreshOn.IsZero() {
		d = min(d, refreshOn.Sub(now))
	}
	return max(d, 0)
}

func (p *Provider) expire(c *credentials) {
	if p.valid.CompareAndSwap(c, nil) {
		p.emit(Event{Kind: EventExpired}, slog.LevelWarn, "entraredis: token expired before a new one arrived",
			slog.Time("expired_on", c.expiresOn))
		p.mu.Lock()
		ls := p.subs.snapshot()
		p.mu.Unlock()
		// Only now do the listeners hear of a failure: go-redis closes a connection whose listener
		// gets OnError, which is right for a connection whose token is dead and wrong while it lives.
		for _, l := range ls {
			l.OnError(ErrTokenUnavailable)
		}
	}
}

// backgroundRefresh runs at the refresh point and retries until a token is cached whose own refresh
// point is still ahead, or the provider closes. It never gives up. Its calls are paced like the
// callers' (they share one schedule), so it waits for the next attempt to be due.
func (p *Provider) backgroundRefresh() {
	p.mu.Lock()
	if p.closed || p.refreshing {
		p.mu.Unlock()
		return
	}
	p.refreshing = true
	p.wg.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.refreshing = false
		p.mu.Unlock()
		p.wg.Done()
	}()
	for attempt := 1; ; attempt++ {
		c, err := p.fetch(p.ctx, true)
		if err == nil && time.Until(c.refreshAt) > 0 {
			return
		}
		// A token already due for refresh means the credential served it from its own cache:
		// wait as after a failure rather than asking again at once.
		wait := p.opts.Retry.Backoff(attempt)
		if err != nil {
			wait = p.untilDue()
		}
		if c := p.valid.Load(); c != nil {
			wait = min(wait, time.Until(c.expiresOn)) // then attempts are due sooner
		}
		t := time.NewTimer(max(wait, 10*time.Millisecond))
		select {
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if c := p.valid.Load(); c != nil && time.Until(c.refreshAt) > 0 {
			return // a caller's fetch got a fresh token meanwhile
		}
	}
}

// untilDue returns how long until the next credential call may start.
func (p *Provider) untilDue() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.inflight != nil:
		return time.Second // one running past FetchTimeout: look again later
	case p.failures == 0:
		return 0
	}
	return time.Until(p.dueLocked())
}

func (p *Provider) latest() *credentials {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newest
}

func (p *Provider) log(level slog.Level, msg string, attrs ...slog.Attr) {
	if p.opts.Logger != nil {
		p.opts.Logger.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

func (p *Provider) emit(e Event, level slog.Level, msg string, attrs ...any) {
	if p.opts.Logger != nil {
		p.opts.Logger.Log(context.Background(), level, msg, attrs...)
	}
	if p.opts.OnEvent != nil {
		p.opts.OnEvent(e)
	}
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func randN(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

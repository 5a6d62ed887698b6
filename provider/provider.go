// Package provider turns an azcore.TokenCredential into the credentials go-redis needs for Azure Cache
// for Redis and Azure Managed Redis: a cached Microsoft Entra ID token, refreshed in the background
// before it expires, served as go-redis's CredentialsProviderContext (new connections) and
// auth.StreamingCredentialsProvider (re-AUTH of open connections).
//
// The username Azure expects is the identity's object ID; the provider reads it from the token's oid
// claim unless Options.Username is set. The password is the token itself: it never appears in an
// error, an event or a log line.
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
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"golang.org/x/sync/singleflight"

	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/jwtutil"
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
)

// Options configures a Provider. Zero fields mean defaults; a nil *Options means all defaults.
type Options struct {
	// Scopes requested from the credential; default []string{Scope}.
	Scopes []string
	// RefreshOffset: refresh when less than this remains of the token's life; default 5m. When it is
	// more than half the life (short-lived tokens in tests, odd identity providers), the provider
	// refreshes at 50-75% of the life instead, so it never calls the credential in a tight loop.
	RefreshOffset time.Duration
	// RefreshJitter spreads the refreshes of a fleet: a random part of it is subtracted from the
	// refresh time; default 1m.
	RefreshJitter time.Duration
	// Username overrides the token's oid claim.
	Username string
	// FetchTimeout bounds each credential call that has no caller context: Subscribe (go-redis gives
	// it none) and the background refresh; default 30s.
	FetchTimeout time.Duration
	// Retry sets the backoff of the background refresh, which never gives up while the provider is
	// open (Retry.MaxAttempts is ignored there).
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
}

// Provider caches a token from an azcore.TokenCredential and refreshes it before it expires. It is
// safe for concurrent use. Close it when done: it stops the background refresh.
type Provider struct {
	cred  azcore.TokenCredential
	opts  Options
	valid atomic.Pointer[credentials] // nil when no token is cached or it has expired: the hot path is one load
	sf    singleflight.Group

	ctx    context.Context // ends at Close; bounds every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup // background loops and fetches in flight

	mu           sync.Mutex
	closed       bool
	gen          uint64
	newest       *credentials // the latest token fetched, even if expired
	failures     int          // consecutive failed fetches
	refreshing   bool         // a background refresh loop is running
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
// cached it is one atomic load; otherwise the caller fetches one (shared with concurrent callers),
// bounded by ctx. Its signature is go-redis's Options.CredentialsProviderContext.
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
// the server rejects a token.
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

// Close stops the background refresh and waits for fetches in flight to end. Later calls of the
// provider's methods return ErrClosed; a second Close returns nil.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.valid.Store(nil)
	stop(p.refreshTimer)
	stop(p.expiryTimer)
	p.subs = subscribers{}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// fetch returns a token from the credential, sharing one call among concurrent callers. Unless
// force is set, a token stored by a fetch that ended after the caller's check is returned as is.
// The caller's ctx bounds only its own wait: the shared call goes on for the others.
func (p *Provider) fetch(ctx context.Context, force bool) (*credentials, error) {
	ch := p.sf.DoChan("token", func() (any, error) {
		if !force {
			if c := p.valid.Load(); c != nil {
				return c, nil
			}
		}
		return p.fetchShared()
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*credentials), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, ctx.Err())
	}
}

func (p *Provider) fetchShared() (*credentials, error) {
	if !p.enter() {
		return nil, ErrClosed
	}
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.FetchTimeout)
	defer cancel()
	at, err := p.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: p.opts.Scopes})
	if prev := p.latest(); err == nil && prev != nil && prev.password == at.Token {
		// Served from the credential's own cache: nothing new to store or announce.
		if cur := p.valid.Load(); cur != nil && cur.password == at.Token {
			return cur, nil
		}
		err = ErrExpiredToken
	}
	if err == nil {
		var c *credentials
		if c, err = p.parse(at); err == nil {
			p.store(c, at.RefreshOn)
			return c, nil
		}
	}
	if p.ctx.Err() != nil {
		return nil, ErrClosed
	}
	// Formatted once, here: azidentity's errors are not safe to read from several goroutines, and
	// this value reaches every caller that shared the fetch.
	err = fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
	p.failed(err)
	return nil, err
}

// parse checks a token and finds its username. Its errors never hold the token.
func (p *Provider) parse(at azcore.AccessToken) (*credentials, error) {
	if at.Token == "" {
		return nil, errors.New("provider: credential returned an empty token")
	}
	if !at.ExpiresOn.After(time.Now()) {
		return nil, ErrExpiredToken
	}
	c := &credentials{username: p.opts.Username, password: at.Token, expiresOn: at.ExpiresOn}
	if c.username == "" {
		claims, err := jwtutil.ParseClaims(at.Token)
		if err != nil {
			return nil, fmt.Errorf("provider: reading the token's claims: %w", err)
		}
		if c.username, err = claims.RequireObjectID(); err != nil {
			return nil, fmt.Errorf("%w (%w)", ErrNoUsername, err)
		}
	}
	return c, nil
}

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
	p.failures = 0
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

// refreshDelay: ExpiresOn - RefreshOffset - rand[0, RefreshJitter), or the credential's RefreshOn
// when sooner. An offset over half the life is replaced by 50-75% of the life: at most about two
// credential calls per token, whatever the configuration.
func (p *Provider) refreshDelay(life time.Duration, refreshOn, now time.Time) time.Duration {
	var d time.Duration
	if off := p.opts.RefreshOffset; off <= life/2 {
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

func (p *Provider) failed(err error) {
	p.mu.Lock()
	p.failures++
	n := p.failures
	ls := p.subs.snapshot()
	p.mu.Unlock()
	var exp time.Time
	if c := p.valid.Load(); c != nil {
		exp = c.expiresOn
	} else {
		for _, l := range ls {
			l.OnError(err)
		}
	}
	p.emit(Event{Kind: EventRefreshFailed, ExpiresOn: exp, Attempt: n, Err: err}, slog.LevelWarn,
		"entraredis: token refresh failed", slog.Int("attempt", n), slog.Any("error", err), slog.Time("current_expires_on", exp))
}

// backgroundRefresh runs at the refresh point and retries with backoff until a token is cached whose
// own refresh point is still ahead, or the provider closes. It never gives up.
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
		t := time.NewTimer(p.opts.Retry.Backoff(attempt))
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

func (p *Provider) latest() *credentials {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.newest
}

// enter registers a fetch with Close's WaitGroup unless the provider is closed.
func (p *Provider) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
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

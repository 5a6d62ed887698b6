package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/redis/go-redis/v9/auth"

	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/retry"
)

// Fetching: one credential call at a time, shared by every caller that waits for it, paced after a
// failure (pacing.go), bounded by FetchTimeout, and safe against a credential that panics or
// ignores its context.

// attempt is one credential call. Its result fields are written before done is closed.
type attempt struct {
	start   time.Time
	done    chan struct{}
	overdue bool // reported as running past FetchTimeout (guarded by Provider.mu)
	c       *credentials
	err     error
}

// overdueGrace is how long after its context's deadline a credential call may take to return its
// error before callers call it stuck: an HTTP client notices the deadline, closes the connection
// and unwinds; that is not a credential ignoring its context.
const overdueGrace = 500 * time.Millisecond

// deadline returns when a is overdue.
func (a *attempt) deadline(fetchTimeout time.Duration) time.Time {
	return a.start.Add(fetchTimeout + overdueGrace)
}

// errFetchTimeout is what the callers of an overdue credential call get: made once, it costs them
// no allocation.
var errFetchTimeout = fmt.Errorf("%w: %w", ErrTokenUnavailable, ErrFetchTimeout)

// fetch returns a token: from the credential call in flight if there is one, else from a new call,
// unless the last call failed and the next is not due yet: then the last error, at once (also
// while the next runs, if no token is valid). Unless force is set, a valid cached token is
// returned as is. The caller's wait ends with ctx, at the call's FetchTimeout, or at Close; the
// call goes on for the others.
func (p *Provider) fetch(ctx context.Context, force bool) (*credentials, error) {
	if pc := p.paced.Load(); pc != nil && !force && time.Now().Before(pc.due) {
		// The outage path: hundreds of callers a second must not queue on the lock.
		return nil, pc.err
	}
	a, c, err := p.begin(force)
	if a == nil {
		return c, err
	}
	t := time.NewTimer(time.Until(a.deadline(p.opts.FetchTimeout)))
	defer t.Stop()
	select {
	case <-a.done:
		return a.c, a.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the credential call has run for %v without an answer: %w", ErrTokenUnavailable,
			time.Since(a.start).Round(time.Millisecond), ctx.Err())
	case <-p.ctx.Done():
		return nil, ErrClosed
	case <-t.C:
		select {
		case <-a.done:
			return a.c, a.err
		default:
			return nil, p.overdue(a)
		}
	}
}

// begin returns the attempt to wait for, starting one if none runs and one is due; or, with no
// attempt, the valid token (unless force) or the error to return at once.
func (p *Provider) begin(force bool) (*attempt, *credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, ErrClosed
	}
	if !force {
		if c := p.valid.Load(); c != nil {
			return nil, c, nil // stored by a call that ended after the caller's check
		}
	}
	outage := p.failures > 0 && p.valid.Load() == nil
	if a := p.inflight; a != nil {
		if outage && time.Now().Before(a.deadline(p.opts.FetchTimeout)) {
			// The last call failed and none is valid: the answer is the last error, now, not
			// after this retry (azidentity's own retries can make it last seconds).
			return nil, nil, p.lastErr
		}
		return a, nil, nil // past FetchTimeout, the caller reports it overdue at once
	}
	now := time.Now()
	if p.failures > 0 && now.Before(p.dueLocked()) {
		return nil, nil, p.lastErr
	}
	a := &attempt{start: now, done: make(chan struct{})}
	p.inflight = a
	if outage {
		// Until this call ends (finish replaces it), callers keep getting the last error lock-free.
		p.paced.Store(&paced{due: a.deadline(p.opts.FetchTimeout), err: p.lastErr})
	}
	go p.run(a)
	return a, nil, nil
}

// paced is what callers with no valid token get until due: the last failure.
type paced struct {
	due time.Time
	err error
}

// dueLocked returns when the next credential call may start after a failure: Options.Retry's
// backoff while a token is valid; at most 0.5 s while none is (recovery is then urgent, and the
// identity endpoint must not see more than a few calls a second); never before Retry-After.
func (p *Provider) dueLocked() time.Time {
	b := p.backoff
	if p.valid.Load() == nil {
		b = p.quickBackoff
	}
	return later(p.lastEnd.Add(b), p.retryAfter)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// quickRetry spaces the attempts while no valid token is left: 0.19-0.25 s after the first failure,
// then 0.375-0.5 s, so that at most about 2 calls a second reach the identity endpoint (IMDS
// allows 20), and the first command after its return waits at most half a second for the token,
// plus up to 1 s for go-redis's dial probe if its pool stopped dialling after repeated failures.
var quickRetry = retry.Policy{InitialBackoff: 250 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Jitter: 0.25}

// run makes one credential call, bounded by FetchTimeout and Close, and publishes its outcome.
func (p *Provider) run(a *attempt) {
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.FetchTimeout)
	defer cancel()
	at, err := p.getToken(ctx)
	if prev := p.latest(); err == nil && prev != nil && prev.password == at.Token {
		// Served from the credential's own cache: nothing new to store or announce.
		if cur := p.valid.Load(); cur != nil && cur.password == at.Token {
			p.finish(a, cur, nil, 0)
			return
		}
		err = ErrExpiredToken
	}
	if err == nil {
		var c *credentials
		if c, err = p.parse(at); err == nil {
			p.store(c, at.RefreshOn)
			p.finish(a, c, nil, 0)
			return
		}
	}
	if p.ctx.Err() != nil {
		p.finish(a, nil, ErrClosed, 0)
		return
	}
	ra := retryAfter(err) // headers only: the response body is left for the error's own message
	// Formatted once, here: azidentity's errors are not safe to read from several goroutines, and
	// this value reaches every caller that shared the call.
	p.finish(a, nil, fmt.Errorf("%w: %w", ErrTokenUnavailable, err), ra)
}

// getToken calls the credential, turning a panic into an error.
func (p *Provider) getToken(ctx context.Context) (at azcore.AccessToken, err error) {
	defer func() {
		if v := recover(); v != nil {
			var secret string
			if c := p.latest(); c != nil {
				secret = c.password
			}
			at, err = azcore.AccessToken{}, panicError(v, secret)
			// The stack shows where; Go prints no string contents in it, so no token.
			p.log(slog.LevelError, "entraredis: the credential panicked; the provider goes on",
				slog.Any("error", err), slog.String("stack", string(debug.Stack())))
		}
	}()
	return p.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: p.opts.Scopes})
}

// finish ends attempt a with its outcome and, after a failure, sets when the next may start.
func (p *Provider) finish(a *attempt, c *credentials, err error, ra time.Duration) {
	now := time.Now()
	p.mu.Lock()
	p.inflight = nil
	p.lastEnd = now
	a.c, a.err = c, err
	close(a.done)
	if err == nil || p.closed {
		if err == nil {
			p.paced.Store(nil)
		}
		p.mu.Unlock()
		return
	}
	p.failures++
	n := p.failures
	p.lastErr = err
	p.backoff = p.opts.Retry.Backoff(n)
	p.quickBackoff = quickRetry.Backoff(n)
	p.retryAfter = time.Time{}
	if ra > 0 {
		p.retryAfter = now.Add(ra)
	}
	next := p.dueLocked()
	p.paced.Store(&paced{due: later(p.lastEnd.Add(p.quickBackoff), p.retryAfter), err: err})
	var ls []auth.CredentialsListener
	cur := p.valid.Load()
	if cur == nil {
		ls = p.subs.snapshot()
	}
	p.mu.Unlock()

	var exp time.Time
	if cur != nil {
		exp = cur.expiresOn
	}
	for _, l := range ls {
		l.OnError(err)
	}
	p.emit(Event{Kind: EventRefreshFailed, ExpiresOn: exp, Attempt: n, Err: err, RetryAfter: ra, NextAttempt: next}, slog.LevelWarn,
		"entraredis: token refresh failed", slog.Int("attempt", n), slog.Any("error", err), slog.Time("current_expires_on", exp),
		slog.Duration("retry_after", ra), slog.Duration("next_attempt_in", next.Sub(now)))
}

// overdue reports, once per call, a credential call running past FetchTimeout.
func (p *Provider) overdue(a *attempt) error {
	p.mu.Lock()
	first := !a.overdue && !p.closed
	a.overdue = true
	n := p.failures + 1
	if first && p.valid.Load() == nil {
		// Callers get this at once, lock-free, until the call returns (finish replaces it).
		p.paced.Store(&paced{due: time.Now().Add(p.opts.FetchTimeout), err: errFetchTimeout})
	}
	p.mu.Unlock()
	if first {
		p.emit(Event{Kind: EventRefreshFailed, Attempt: n, Err: errFetchTimeout}, slog.LevelError,
			"entraredis: a credential call has run longer than FetchTimeout: the credential ignores its context; no new call starts until it returns",
			slog.Duration("fetch_timeout", p.opts.FetchTimeout), slog.Time("started", a.start))
	}
	return errFetchTimeout
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

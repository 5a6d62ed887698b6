package provider

import (
	"context"
	"errors"
	"time"

	"github.com/entraredis/entraredis/internal/renewal"
	"github.com/entraredis/entraredis/jwtutil"
)

// renewal returns the cached token with its schedule, without I/O; ok is false when no valid
// token is cached. It reads the token's claims (its life comes from iat): callers cache the value
// per Generation (Token is the cheap check).
func (p *Provider) renewal() (r renewal.Renewal, ok bool) {
	c := p.valid.Load()
	if c == nil {
		return renewal.Renewal{}, false
	}
	return renewalOf(c, time.Now()), true
}

// awaitRenewal is renewal, fetching a token when none is valid. After a failed fetch, when the
// next attempt the provider's pacing allows is due before ctx ends (at most about half a second
// away once no valid token is left), it waits for that attempt and returns its outcome, rather than
// the last error at once: a client that dials again after each failed dial (rueidis, valkey-go)
// then dials at the pace of the credential calls instead of in a loop, and its first dial after the
// identity provider's return gets the token. Otherwise it returns the error at once.
func (p *Provider) awaitRenewal(ctx context.Context) (renewal.Renewal, error) {
	if r, ok := p.renewal(); ok {
		return r, nil
	}
	_, _, err := p.CredentialsProviderContext(ctx)
	// At most a few looks: the attempt due (or running) may be taken by another caller between
	// the wait and the look, which then gets the last error at once.
	for look, seen := 0, -1; look < 3 && err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil; look++ {
		d, running, failures := p.nextAttempt()
		if seen >= 0 && failures != seen {
			break // the attempt waited for was made, and failed: its error
		}
		seen = failures
		if dl, ok := ctx.Deadline(); ok && running == nil && time.Until(dl) <= d {
			break // not due in time: the last error, at once
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-running: // nil when none runs
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() == nil {
			_, _, err = p.CredentialsProviderContext(ctx)
		}
	}
	if err != nil {
		return renewal.Renewal{}, err
	}
	if r, ok := p.renewal(); ok {
		return r, nil
	}
	return renewal.Renewal{}, ErrTokenUnavailable // expired the moment it came: the credential's clock is off
}

// nextAttempt returns how long until the next credential call may start, or the call running now
// (d is then how long it may still run, up to its FetchTimeout: a caller waits for it until its
// own deadline), and the failures so far.
func (p *Provider) nextAttempt() (d time.Duration, running <-chan struct{}, failures int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.inflight != nil:
		return max(time.Until(p.inflight.deadline(p.opts.FetchTimeout)), 0), p.inflight.done, p.failures
	case p.failures == 0:
		return 0, nil, 0
	}
	return max(time.Until(p.dueLocked()), 0), nil, p.failures
}

func renewalOf(c *credentials, now time.Time) renewal.Renewal {
	// Without iat (not an Entra token) the life is taken as what is left now: shorter than the
	// truth, so the lead errs early.
	life := c.expiresOn.Sub(now)
	if cl, err := jwtutil.ParseClaims(c.password); err == nil && !cl.IssuedAt.IsZero() && cl.IssuedAt.Before(c.expiresOn) {
		life = c.expiresOn.Sub(cl.IssuedAt)
	}
	return renewal.Renewal{
		Username: c.username, Password: c.password, ExpiresOn: c.expiresOn, RefreshAt: c.refreshAt,
		RenewBy: c.expiresOn.Add(-renewal.Lead(life)), Life: life, Generation: c.gen,
	}
}

func init() {
	renewal.Of = func(p any) (renewal.Renewal, bool) { return p.(*Provider).renewal() }
	renewal.Await = func(ctx context.Context, p any) (renewal.Renewal, error) { return p.(*Provider).awaitRenewal(ctx) }
}

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
	if err != nil && !errors.Is(err, ErrClosed) && ctx.Err() == nil {
		d := p.untilDue()
		if dl, ok := ctx.Deadline(); d > 0 && (!ok || time.Until(dl) > d) {
			t := time.NewTimer(d)
			select {
			case <-t.C:
				_, _, err = p.CredentialsProviderContext(ctx)
			case <-ctx.Done():
				t.Stop()
			}
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

package provider

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/entraredis/entraredis/jwtutil"
)

// Renewal schedules, for clients that re-authenticate each connection themselves at a time they
// are given (rueidis and valkey-go: AuthCredentials.RefreshAfter), when a connection
// authenticated with the cached token sends the next one: after the provider has fetched it, and
// RenewLead before the token expires, as Microsoft asks (Azure closes the connection at expiry).
type Renewal struct {
	Username   string
	Password   string    // the token; String and LogValue leave it out
	ExpiresOn  time.Time // of the token
	RefreshAt  time.Time // the provider's background refresh fetches the next token from then
	RenewBy    time.Time // ExpiresOn - RenewLead(the token's life)
	Life       time.Duration
	Generation uint64 // TokenInfo.Generation of the token
}

// Renewal returns the cached token with its schedule, without I/O; ok is false when no valid
// token is cached. It reads the token's claims (its life comes from iat): callers cache the value
// per Generation (Token is the cheap check).
func (p *Provider) Renewal() (r Renewal, ok bool) {
	c := p.valid.Load()
	if c == nil {
		return Renewal{}, false
	}
	return renewalOf(c, time.Now()), true
}

// AwaitRenewal is Renewal, fetching a token when none is valid. After a failed fetch, when the
// next attempt the provider's pacing allows is due before ctx ends (at most about half a second
// away once no valid token is left), it waits for that attempt and returns its outcome, rather than
// the last error at once: a client that dials again after each failed dial (rueidis, valkey-go)
// then dials at the pace of the credential calls instead of in a loop, and its first dial after the
// identity provider's return gets the token. Otherwise it returns the error at once.
func (p *Provider) AwaitRenewal(ctx context.Context) (Renewal, error) {
	if r, ok := p.Renewal(); ok {
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
		return Renewal{}, err
	}
	if r, ok := p.Renewal(); ok {
		return r, nil
	}
	return Renewal{}, ErrTokenUnavailable // expired the moment it came: the credential's clock is off
}

func renewalOf(c *credentials, now time.Time) Renewal {
	// Without iat (not an Entra token) the life is taken as what is left now: shorter than the
	// truth, so the lead errs early.
	life := c.expiresOn.Sub(now)
	if cl, err := jwtutil.ParseClaims(c.password); err == nil && !cl.IssuedAt.IsZero() && cl.IssuedAt.Before(c.expiresOn) {
		life = c.expiresOn.Sub(cl.IssuedAt)
	}
	return Renewal{
		Username: c.username, Password: c.password, ExpiresOn: c.expiresOn, RefreshAt: c.refreshAt,
		RenewBy: c.expiresOn.Add(-RenewLead(life)), Life: life, Generation: c.gen,
	}
}

// RenewLead is how long before a token's expiry a connection should have moved to the next token:
// 3 minutes (Microsoft's guidance), or an eighth of the life for tokens shorter than 24 minutes
// (tests), the rule the hook's connection guard follows.
func RenewLead(life time.Duration) time.Duration {
	lead := 3 * time.Minute
	if life > 0 {
		lead = min(lead, life/8)
	}
	return lead
}

// Next returns when a connection that sends this token at now should send the next one.
//
// While the provider's refresh is ahead: a random time in the last three quarters of
// [RefreshAt, RenewBy), so that the provider has the next token by then (its fetch had a quarter
// of the window) and a fleet's connections spread their AUTH over minutes (on Azure's 60-90 minute
// tokens and the default RefreshOffset, 5-6 minutes before expiry to 3 minutes before it). When
// the provider refreshes later than RenewBy (a short RefreshOffset), the window is [RefreshAt,
// halfway to the expiry).
//
// Once that time has passed with this token still the newest (the refresh is slow or failing, or
// the connection was dialled late in the token's life), it returns a retry soon: a 32nd of the
// life, at least 50 ms and at most 10 s, plus up to half that again, so that each connection asks
// again a few times before the token expires, and never in a tight loop.
func (r Renewal) Next(now time.Time) time.Time {
	from, to := r.RefreshAt, r.RenewBy
	if !to.After(from) {
		to = from.Add(r.ExpiresOn.Sub(from) / 2)
	}
	from = from.Add(to.Sub(from) / 4)
	if now.Before(from) {
		return from.Add(randN(to.Sub(from)))
	}
	retry := min(max(r.Life/32, 50*time.Millisecond), 10*time.Second)
	return now.Add(retry + randN(retry/2))
}

// String leaves the token out, so that a %v never prints it.
func (r Renewal) String() string {
	return "provider renewal{" + r.Username + ", expires " + r.ExpiresOn.String() + ", renew by " + r.RenewBy.String() + "}"
}

// GoString leaves the token out of %#v too.
func (r Renewal) GoString() string { return r.String() }

// LogValue leaves the token out of slog records.
func (r Renewal) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", r.Username), slog.Time("expires_on", r.ExpiresOn),
		slog.Time("refresh_at", r.RefreshAt), slog.Time("renew_by", r.RenewBy), slog.Uint64("generation", r.Generation))
}

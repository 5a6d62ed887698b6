// Package renewal is the schedule on which a client that re-authenticates each connection itself
// at a time it is given (rueidis and valkey-go: AuthCredentials.RefreshAfter) sends the next token:
// after the provider has fetched it, and Lead before the token expires, as Microsoft asks (Azure
// closes a connection at expiry). Internal: rueidisentra and valkeyentra (nested modules of this
// repository) use it through the provider's link functions; it is not part of the API.
package renewal

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Renewal is a provider's cached token with its schedule: when a connection authenticated with it
// sends the next one.
type Renewal struct {
	Username   string
	Password   string    // the token; String and LogValue leave it out
	ExpiresOn  time.Time // of the token
	RefreshAt  time.Time // the provider's background refresh fetches the next token from then
	RenewBy    time.Time // ExpiresOn - Lead(the token's life)
	Life       time.Duration
	Generation uint64 // TokenInfo.Generation of the token
}

// Lead is how long before a token's expiry a connection should have moved to the next token:
// 3 minutes (Microsoft's guidance), or an eighth of the life for tokens shorter than 24 minutes
// (tests), the rule the hook's connection guard follows.
func Lead(life time.Duration) time.Duration {
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

func randN(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// Of returns provider p's cached token with its schedule, without I/O; ok is false when no valid
// token is cached. Await is Of, fetching when none is valid: after a failed fetch it waits, within
// ctx, for the next attempt the provider's pacing allows. The provider package sets both.
var (
	Of    func(p any) (r Renewal, ok bool)
	Await func(ctx context.Context, p any) (Renewal, error)
)

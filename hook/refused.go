package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/jwtutil"
)

// When the cache refuses a token the provider has just got, a new token will not help: the
// identity is not a Redis user on the cache (no access policy), the token is for another audience,
// or a clock is wrong. Retrying then only makes credential calls and TLS handshakes, and hides the
// cause. So a token the server refused after a refresh forced by a refusal, or refused again, is
// blocked: commands fail at once with an error that names the identity and the fixes
// (ErrTokenRefused), no connection is dialled for it, and only a different token lifts the block.

// ErrTokenRefused is matched (errors.Is) by the error of a command that failed because the cache
// refused the provider's current token and a refresh could not replace it: the identity is not a
// Redis user on the cache (no access policy), the token's audience is wrong, or a clock is. The
// error wraps the server's reply (errors.As with a redis.Error), and its text names the user
// (oid), the token's audience, tenant and expiry, and the likely fixes; never the token.
var ErrTokenRefused = errors.New("entraredis: the cache refused the identity's token")

// Audiences the cache accepts in a token's aud claim.
const (
	audienceURL  = "https://redis.azure.com"
	audienceGUID = "acca5fbb-b7e4-4009-81f1-37e38fd66d78"
)

// refusedError is the error of a command whose token the cache refused: the identity, the token's
// claims (never the token) and the likely fixes. It wraps ErrTokenRefused and the server's reply.
type refusedError struct {
	reply     error     // the server's reply: WRONGPASS, ERR WRONGPASS, NOAUTH
	username  string    // the user sent with the token: its oid, unless provider.Options.Username
	objectID  string    // the token's oid claim
	tenantID  string    // tid
	audience  []string  // aud
	expiresOn time.Time // exp
	notBefore time.Time // nbf
	hints     []string  // the likely fixes, the likeliest first
}

func init() {
	link.DiagnoseRefusal = func(reply error, username, token string) (string, []string) {
		e := newRefusedError(reply, username, token)
		return e.summary(), e.hints
	}
}

// newRefusedError describes the refusal of token for username by the server's reply. It reads the
// token's claims without verifying it and keeps none of its text.
func newRefusedError(reply error, username, token string) *refusedError {
	e := &refusedError{reply: reply, username: username}
	if c, err := jwtutil.ParseClaims(token); err == nil {
		e.objectID, e.tenantID, e.audience = c.ObjectID, c.TenantID, c.Audience
		e.expiresOn, e.notBefore = c.ExpiresAt, c.NotBefore
	}
	e.hints = e.fixes(time.Now())
	return e
}

func (e *refusedError) fixes(now time.Time) []string {
	var first, rest []string
	user := e.objectID // the identity to add is the token's, whatever username was sent
	if user == "" {
		user = e.username
	}
	policy := fmt.Sprintf("add the identity (object ID %s) as a Redis user on the cache: assign it a data access policy (Azure portal: the cache's Authentication blade, Microsoft Entra tab; or \"az redis access-policy-assignment create --object-id %s ...\"; Azure Managed Redis: \"az redisenterprise database access-policy-assignment create\"), and make sure Microsoft Entra authentication is enabled there", user, user)
	audience := "the token's audience must be " + audienceURL + " or " + audienceGUID + ": request the scope " + audienceURL + "/.default (provider.Options.Scopes)"
	clock := "check the clocks: this machine's and the identity provider's must agree with the cache's (NTP); a token is refused before its nbf and after its exp"
	switch {
	case len(e.audience) > 0 && !goodAudience(e.audience):
		first = append(first, "the token's audience is "+strings.Join(e.audience, ", ")+": "+audience)
	default:
		rest = append(rest, audience)
	}
	switch {
	case !e.expiresOn.IsZero() && !now.Before(e.expiresOn), !e.notBefore.IsZero() && now.Before(e.notBefore):
		first = append(first, "the token is outside its validity by this machine's clock: "+clock)
	default:
		rest = append(rest, clock)
	}
	if e.objectID != "" && e.username != "" && e.username != e.objectID {
		first = append(first, fmt.Sprintf("the username %s is not the token's oid %s: Azure expects the oid (leave provider.Options.Username empty)", e.username, e.objectID))
	}
	return append(append(first, policy), rest...)
}

func goodAudience(aud []string) bool {
	for _, a := range aud {
		if strings.EqualFold(strings.TrimSuffix(a, "/"), audienceURL) || strings.EqualFold(a, audienceGUID) {
			return true
		}
	}
	return false
}

func (e *refusedError) Error() string {
	var b strings.Builder
	b.WriteString("entraredis: ")
	b.WriteString(e.summary())
	b.WriteString("; a new token would not help, so commands fail at once until the provider has a different one. Likely fixes: ")
	for i, h := range e.hints {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "(%d) %s", i+1, h)
	}
	return b.String()
}

// summary says who was refused and how, without the fixes: "the cache refused the token of user
// <oid> (audience ..., tenant ..., expires ...): <reply>".
func (e *refusedError) summary() string {
	var b strings.Builder
	b.WriteString("the cache refused the token of user ")
	b.WriteString(orUnknown(e.username))
	aud := "unknown"
	if len(e.audience) > 0 {
		aud = strings.Join(e.audience, ",")
	}
	fmt.Fprintf(&b, " (audience %s, tenant %s", aud, orUnknown(e.tenantID))
	if !e.expiresOn.IsZero() {
		fmt.Fprintf(&b, ", expires %s", e.expiresOn.UTC().Format(time.RFC3339))
	}
	b.WriteString(")")
	if e.reply != nil {
		b.WriteString(": ")
		b.WriteString(e.reply.Error())
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Unwrap returns ErrTokenRefused and the server's reply.
func (e *refusedError) Unwrap() []error {
	if e.reply == nil {
		return []error{ErrTokenRefused}
	}
	return []error{ErrTokenRefused, e.reply}
}

// refusal is a blocked token: the provider's generation gen, and the error its commands get.
type refusal struct {
	gen   uint64
	err   *refusedError
	probe atomic.Int64 // unix ns until which a command probing a newer token holds the others back
}

// probeSpan bounds how long a probe holds the other commands back: a probe may be a slow or
// blocking command (BLPOP 0), whose outcome says nothing for a long time.
const probeSpan = time.Second

// refusals is the hook's state of refused tokens.
type refusals struct {
	blocked atomic.Pointer[refusal] // the last token refused for good; nil: none, or a newer one was accepted
	forced  atomic.Uint64           // generation+1 of the last token a refusal's refresh brought
}

// blockedErr returns the error for a command on the current token, generation gen, when it is
// blocked. On a newer token, the first command is let through as its probe (returned) and the
// others fail at once until it is done: they would only dial, in a burst, for a token as likely
// to be refused.
func (h *Hook) blockedErr(gen uint64) (*refusal, error) {
	r := h.refused.blocked.Load()
	if r == nil {
		return nil, nil
	}
	if r.gen != gen {
		now := time.Now().UnixNano()
		if p := r.probe.Load(); p <= now && r.probe.CompareAndSwap(p, now+int64(probeSpan)) {
			return r, nil
		}
	}
	h.refusedCmds.Add(1)
	return nil, r.err
}

// probed takes the outcome of a probe of a newer token than r's: an answer from the server other
// than an authentication error lifts the block; no answer lets another command probe. A refusal
// has replaced the block already (onRefused).
func (h *Hook) probed(r *refusal, err error) {
	if h.refused.blocked.Load() != r {
		return
	}
	var re redis.Error
	if err == nil || err == redis.Nil || (errors.As(err, &re) && classify(err) != kindAuth) {
		if h.refused.blocked.CompareAndSwap(r, nil) {
			h.logf(slog.LevelInfo, "entraredis: the cache accepts the new token: commands go through again")
		}
		return
	}
	r.probe.Store(0)
}

// onRefused handles the server's refusal (reply) of the current token, generation gen. It returns
// the error when the token is to be blocked: it came from a refresh forced by an earlier
// refusal, or a paced refresh brought no different token. Otherwise it has refreshed the token
// and the command may be sent again.
func (h *Hook) onRefused(ctx context.Context, name string, gen uint64, reply error) *refusedError {
	if r := h.refused.blocked.Load(); r != nil && r.gen == gen {
		return r.err
	}
	if h.refused.forced.Load() != gen+1 {
		for {
			start, running, due := forcedRefreshes.begin(h.src)
			if start {
				err := h.src.Refresh(ctx)
				forcedRefreshes.end(h.src)
				if err != nil {
					h.logf(slog.LevelWarn, "entraredis: token refresh after an authentication error failed",
						slog.String("command", name), slog.Any("error", err))
				}
				break
			}
			if running != nil {
				select { // share the refresh another command started
				case <-running:
				case <-ctx.Done():
				}
				break
			}
			if info, ok := h.src.Token(); !ok || info.Generation != gen || sleep(ctx, due) != nil {
				break // the last refresh brought another token, or the caller gave up
			}
		}
		if info, ok := h.src.Token(); ok && info.Generation != gen {
			h.refused.forced.Store(info.Generation + 1)
			return nil
		}
		if ctx.Err() != nil {
			return nil // the caller gave up during the refresh: its own error says so
		}
	}
	return h.blockToken(ctx, name, gen, reply)
}

// blockToken makes gen the blocked token and returns its error.
func (h *Hook) blockToken(ctx context.Context, name string, gen uint64, reply error) *refusedError {
	user, pass, err := h.src.CredentialsProviderContext(ctx)
	if info, ok := h.src.Token(); err != nil || !ok || info.Generation != gen {
		pass = "" // not the refused token any more: the claims are unknown
	}
	e := newRefusedError(reply, user, pass)
	r := &refusal{gen: gen, err: e}
	for {
		cur := h.refused.blocked.Load()
		if cur != nil && cur.gen == gen {
			return cur.err // another command blocked it first
		}
		if h.refused.blocked.CompareAndSwap(cur, r) {
			break
		}
	}
	h.refusedCmds.Add(1)
	h.gaveUp.Add(1)
	h.emit(Event{Kind: EventGaveUp, Command: name, Class: kindAuth.class(), Err: e},
		slog.LevelError, "entraredis: the cache refuses the identity's token; commands fail at once until a different token arrives",
		slog.Any("error", e))
	return e
}

// forcedRefreshes paces the refreshes that refusals force, per provider, whatever the number of
// hooks and clients using it: at most one every half second, no more credential calls than an
// outage's pacing makes.
var forcedRefreshes = pacer{gap: 500 * time.Millisecond}

type pacer struct {
	gap time.Duration
	mu  sync.Mutex
	m   map[source]*paced
}

// paced is the last forced refresh of a source: when it started, and closed when it ended.
type paced struct {
	start time.Time
	done  chan struct{}
}

// begin reports whether a forced refresh of src may start now (then the caller calls end after
// it); if not, running is the refresh in flight to wait for, or, when the last one has ended, due
// is how long until the next may start.
func (p *pacer) begin(src source) (start bool, running <-chan struct{}, due time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if last := p.m[src]; last != nil {
		select {
		case <-last.done:
			if d := p.gap - now.Sub(last.start); d > 0 {
				return false, nil, d
			}
		default:
			return false, last.done, 0
		}
	}
	if p.m == nil {
		p.m = map[source]*paced{}
	}
	for s, e := range p.m {
		select {
		case <-e.done:
			if now.Sub(e.start) >= p.gap {
				delete(p.m, s) // only recent entries matter: the map keeps no provider alive for long
			}
		default:
		}
	}
	p.m[src] = &paced{start: now, done: make(chan struct{})}
	return true, nil, 0
}

// end marks the forced refresh of src that begin allowed as ended.
func (p *pacer) end(src source) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.m[src]; e != nil {
		select {
		case <-e.done:
		default:
			close(e.done)
		}
	}
}

package hook

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/entraredis/entraredis/internal/link"
	"github.com/entraredis/entraredis/jwtutil"
)

// The diagnosis of a refused token: who was refused, how, and the likely fixes. What the hook does
// about a refusal (blocking the token, re-checking it) is in blocked.go.

// ErrTokenRefused is matched (errors.Is) by the error of a command that failed because the cache
// refused the provider's current token and a refresh could not replace it: the identity is not a
// Redis user on the cache (no access policy, or one assigned moments ago: Azure takes minutes to
// apply it), the token's audience is wrong, or a clock is. While it lasts the hook re-checks the
// same token (see Hook), so a cause fixed on the cache's side ends it without a restart. The
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
	b.WriteString("; commands fail at once while the hook re-checks this token (one AUTH at growing intervals, at most ")
	b.WriteString(maxRecheck.String())
	b.WriteString(" apart; the first acceptance lets them through) or the provider gets a different one. Likely fixes: ")
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

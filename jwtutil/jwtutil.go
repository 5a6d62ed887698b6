// Package jwtutil reads the claims of a JSON Web Token without verifying it.
//
// Redis verifies the token's signature; a client only needs to read who the token is for (oid) and
// when it expires (exp). Errors never contain the token, any of its segments or any claim value,
// so they are safe to log.
package jwtutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrMalformed reports a token that is not three base64url segments with a JSON object payload
	// whose registered claims have the right types. Errors wrapping it say which part is wrong.
	ErrMalformed = errors.New("jwtutil: malformed token")
	// ErrNoObjectID reports a token without an oid claim: pass the username explicitly.
	ErrNoObjectID = errors.New("jwtutil: token has no oid claim")
)

// Claims are the claims of an Entra ID access token that a Redis client needs.
type Claims struct {
	ObjectID  string    // oid: the username Azure Redis expects
	TenantID  string    // tid
	Audience  []string  // aud, a string or an array of strings in the token
	Issuer    string    // iss
	Subject   string    // sub
	AppID     string    // appid (v1 tokens), else azp (v2 tokens)
	ExpiresAt time.Time // exp, integer or fractional seconds; zero when absent
	IssuedAt  time.Time // iat; zero when absent
	NotBefore time.Time // nbf; zero when absent
}

// RequireObjectID returns the oid claim, or ErrNoObjectID when it is absent or empty.
func (c *Claims) RequireObjectID() (string, error) {
	if c.ObjectID == "" {
		return "", ErrNoObjectID
	}
	return c.ObjectID, nil
}

// Padding is allowed because some samples (Python's) build tokens by hand with padded segments.
var parser = jwt.NewParser(jwt.WithPaddingAllowed())

// ParseClaims reads the claims without verifying the signature. It fails with ErrMalformed
// (wrapped with a reason that never echoes the token or any segment) on anything that is not a
// JWS compact token of exactly three segments with a JSON object payload. A missing oid or exp is
// not an error here: see RequireObjectID; ExpiresAt is zero without exp.
func ParseClaims(token string) (*Claims, error) {
	if n := strings.Count(token, ".") + 1; n != 3 {
		return nil, fmt.Errorf("%w: has %d segments, want 3", ErrMalformed, n)
	}
	h, rest, _ := strings.Cut(token, ".")
	p, s, _ := strings.Cut(rest, ".")
	switch {
	case h == "" || p == "":
		return nil, malformed("header or payload is empty")
	case !isBase64URL(h):
		return nil, malformed("header is not base64url")
	case !isBase64URL(p):
		return nil, malformed("payload is not base64url")
	case !isBase64URL(s):
		return nil, malformed("signature is not base64url")
	}
	var pl payload
	tok, _, err := parser.ParseUnverified(token, &pl)
	switch {
	case pl.err != nil:
		return nil, pl.err
	case tok == nil || tok.Claims == nil: // jwt sets Claims once the header is decoded
		return nil, malformed("header is not a JSON object")
	case !pl.seen: // invalid JSON, or null (which json decodes without calling UnmarshalJSON)
		return nil, malformed("payload is not a JSON object")
	case err == nil:
		return &pl.c, nil
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An alg jwt does not know is fine: we do not verify, and a new Entra alg must not break us.
		if alg, _ := tok.Header["alg"].(string); alg != "" {
			return &pl.c, nil
		}
		return nil, malformed("header has no alg")
	default: // jwt's own error text is not used: json errors can quote parts of the input
		return nil, malformed("signature is not base64url")
	}
}

// malformed wraps ErrMalformed with a fixed reason; it must never be given input text.
func malformed(reason string) error { return fmt.Errorf("%w: %s", ErrMalformed, reason) }

// isBase64URL reports whether s is base64url, unpadded or correctly padded.
func isBase64URL(s string) bool {
	if t := strings.TrimRight(s, "="); t != s {
		if len(s)%4 != 0 || len(s)-len(t) > 2 {
			return false
		}
		s = t
	}
	if len(s)%4 == 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// payload receives the claims from jwt's parser. Its own decoding keeps claim names
// case-sensitive (encoding/json's struct matching is not) and turns type errors into reasons
// that name the claim but never quote it.
type payload struct {
	c    Claims
	seen bool
	err  error
}

func (pl *payload) UnmarshalJSON(b []byte) error {
	pl.seen = true
	pl.err = pl.decode(b)
	return pl.err
}

func (pl *payload) decode(b []byte) error {
	var m map[string]json.RawMessage
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &m) != nil {
		return malformed("payload is not a JSON object")
	}
	c := &pl.c
	var appID, azp string
	for _, f := range []struct {
		name string
		dst  *string
	}{{"oid", &c.ObjectID}, {"tid", &c.TenantID}, {"iss", &c.Issuer}, {"sub", &c.Subject}, {"appid", &appID}, {"azp", &azp}} {
		if v, ok := m[f.name]; ok && !isNull(v) && json.Unmarshal(v, f.dst) != nil {
			return malformed("claim " + f.name + " is not a string")
		}
	}
	c.AppID = appID
	if c.AppID == "" {
		c.AppID = azp
	}
	if err := audience(m["aud"], &c.Audience); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"exp", &c.ExpiresAt}, {"iat", &c.IssuedAt}, {"nbf", &c.NotBefore}} {
		if err := numericDate(m[f.name], f.name, f.dst); err != nil {
			return err
		}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return len(v) == 0 || string(v) == "null" }

func audience(v json.RawMessage, dst *[]string) error {
	if isNull(v) {
		return nil
	}
	if v[0] == '"' {
		var s string
		if json.Unmarshal(v, &s) == nil {
			*dst = []string{s}
			return nil
		}
	} else if v[0] == '[' {
		var a []*string // pointers tell a null element from ""
		if json.Unmarshal(v, &a) == nil {
			out := make([]string, 0, len(a))
			for _, s := range a {
				if s == nil {
					return malformed("claim aud is not a string or an array of strings")
				}
				out = append(out, *s)
			}
			*dst = out
			return nil
		}
	}
	return malformed("claim aud is not a string or an array of strings")
}

// Limits of a NumericDate: years 1 to 9999, what RFC 3339 and time.Time's JSON can represent.
const minSeconds, maxSeconds = -62135596800, 253402300799

func numericDate(v json.RawMessage, name string, dst *time.Time) error {
	if isNull(v) {
		return nil
	}
	if c := v[0]; c != '-' && (c < '0' || c > '9') {
		return malformed("claim " + name + " is not a number")
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || !(f >= minSeconds && f <= maxSeconds) { // also rejects NaN and ±Inf
		return malformed("claim " + name + " is out of range")
	}
	sec, frac := math.Modf(f)
	*dst = time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
	return nil
}

// jwt.Claims is implemented only to pass payload to ParseUnverified, which validates nothing.

func (*payload) GetExpirationTime() (*jwt.NumericDate, error) { return nil, nil }
func (*payload) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (*payload) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (*payload) GetIssuer() (string, error)                   { return "", nil }
func (*payload) GetSubject() (string, error)                  { return "", nil }
func (*payload) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

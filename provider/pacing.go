package provider

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// maxRetryAfter caps the identity provider's Retry-After: a wrong or hostile header must not stop
// the token's renewal for long.
const maxRetryAfter = 60 * time.Second

// retryAfter returns the wait an identity provider asked for in the HTTP answer behind err (an
// *azcore.ResponseError or *azidentity.AuthenticationFailedError), capped at maxRetryAfter; 0 when
// there is none. It reads only the headers: the body is the error's own, read by its Error method.
func retryAfter(err error) time.Duration {
	var resp *http.Response
	var re *azcore.ResponseError
	var af *azidentity.AuthenticationFailedError
	switch {
	case errors.As(err, &re):
		resp = re.RawResponse
	case errors.As(err, &af):
		resp = af.RawResponse
	}
	if resp == nil {
		return 0
	}
	return min(parseRetryAfter(resp.Header, time.Now()), maxRetryAfter)
}

// parseRetryAfter reads Retry-After (seconds or an HTTP date, RFC 9110 10.2.3), or Azure's
// retry-after-ms and x-ms-retry-after-ms; 0 when absent, unreadable or past.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	for _, name := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if ms, err := strconv.ParseInt(strings.TrimSpace(h.Get(name)), 10, 64); err == nil && ms > 0 {
			return time.Duration(min(ms, int64(maxRetryAfter/time.Millisecond))) * time.Millisecond
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// jwtShape matches anything that looks like a JWT (or a run of base64url long enough to be a key),
// so that a panic message quoting a token is cut.
var jwtShape = regexp.MustCompile(`[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*|[A-Za-z0-9_+/=-]{64,}`)

// panicError names a credential's panic without any token text: the newest token, and anything
// shaped like one, are cut from the message, which is also kept short.
func panicError(v any, secret string) error {
	msg := fmt.Sprint(v)
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[token]")
	}
	msg = jwtShape.ReplaceAllString(msg, "[redacted]")
	const maxLen = 200
	if len(msg) > maxLen {
		msg = strings.ToValidUTF8(msg[:maxLen], "") + "..."
	}
	return fmt.Errorf("%w: %T: %s: fix the credential (a panic is a bug in it)", ErrCredentialPanicked, v, msg)
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/jwtutil"
	"github.com/entraredis/entraredis/provider"
)

// maxTokenInput bounds what token reads from stdin: Entra tokens are a few kilobytes.
const maxTokenInput = 1 << 20

// The aud claims of a token Azure Redis accepts: the resource's URI (scope provider.Scope), or its
// application ID, which Microsoft documents as the alternative scope "<GUID>/.default".
var redisAudiences = []string{strings.TrimSuffix(provider.Scope, "/.default"), entratest.AudienceAppID}

func runToken(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("token", "token [JWT | -]\n\nPrints the claims of an access token, read from the argument or stdin (also the JSON\nof \"az account get-access-token\"). The signature is never printed, nor the token.", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var in string
	switch fs.NArg() {
	case 0:
	case 1:
		in = fs.Arg(0)
	default:
		fmt.Fprintln(stderr, "entraredis token: give one token, or none to read stdin")
		return exitUsage
	}
	if in == "" || in == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxTokenInput+1))
		if err != nil {
			fmt.Fprintf(stderr, "entraredis token: reading stdin: %v\n", err)
			return exitUsage
		}
		if len(b) > maxTokenInput {
			fmt.Fprintln(stderr, "entraredis token: input is over 1 MiB: that is not an access token")
			return exitUsage
		}
		in = string(b)
	}
	tok, err := extractToken(in)
	if err != nil {
		fmt.Fprintf(stderr, "entraredis token: %v\n", err)
		return exitUsage
	}
	c, err := jwtutil.ParseClaims(tok)
	if err != nil {
		// jwtutil's errors never quote the input, so this is safe to print.
		fmt.Fprintf(stderr, "entraredis token: not a JWT access token (%v): pass the access token itself, three base64url segments separated by dots\n", err)
		return exitUsage
	}
	printClaims(stdout, c, time.Now())
	return exitOK
}

// extractToken accepts a bare token, "Bearer <token>", or the JSON printed by
// "az account get-access-token" (accessToken) or a token endpoint (access_token).
func extractToken(in string) (string, error) {
	s := strings.TrimSpace(in)
	if strings.HasPrefix(s, "{") {
		var v struct {
			AccessToken  string `json:"accessToken"`
			AccessToken2 string `json:"access_token"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return "", errors.New("input looks like JSON but is not valid JSON: pass the token, or the output of \"az account get-access-token\"")
		}
		if s = v.AccessToken; s == "" {
			s = v.AccessToken2
		}
		if s == "" {
			return "", errors.New("the JSON has no accessToken or access_token field")
		}
	}
	if b, ok := strings.CutPrefix(s, "Bearer "); ok {
		s = strings.TrimSpace(b)
	}
	if s == "" {
		return "", errors.New("no token given: pass it as an argument or on stdin")
	}
	return s, nil
}

// printClaims writes the claims one per line, dates with the time left or passed, and notes on
// anything Azure Redis would reject.
func printClaims(w io.Writer, c *jwtutil.Claims, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(name, value string) {
		if value != "" {
			fmt.Fprintf(tw, "%s\t%s\n", name, value)
		}
	}
	// Claims are the token issuer's text: escaped, so that none can move the cursor, recolour the
	// terminal or forge a line of its own (a newline in sub followed by "note: ...").
	line("oid", printable(c.ObjectID))
	line("tid", printable(c.TenantID))
	aud := make([]string, len(c.Audience))
	for i, a := range c.Audience {
		aud[i] = printable(a)
	}
	line("aud", strings.Join(aud, ", "))
	line("iss", printable(c.Issuer))
	line("sub", printable(c.Subject))
	line("appid", printable(c.AppID))
	line("iat", relTime(c.IssuedAt, now))
	line("nbf", relTime(c.NotBefore, now))
	line("exp", relTime(c.ExpiresAt, now))
	_ = tw.Flush()
	for _, n := range claimNotes(c, now) {
		fmt.Fprintln(w, "note:", n)
	}
}

// claimNotes says what in the claims Azure Redis would reject, and what to do.
func claimNotes(c *jwtutil.Claims, now time.Time) []string {
	var notes []string
	if c.ObjectID == "" {
		notes = append(notes, "no oid claim: Azure Redis expects the identity's object ID as the username; pass it explicitly (provider.Options.Username)")
	}
	if !hasAudience(c.Audience, redisAudiences) {
		notes = append(notes, fmt.Sprintf("aud is not %s: Azure Redis rejects this token (WRONGPASS); request the scope %s (or %s/.default)",
			strings.Join(redisAudiences, " or "), provider.Scope, entratest.AudienceAppID))
	}
	switch {
	case c.ExpiresAt.IsZero():
		notes = append(notes, "no exp claim: the token's expiry is unknown")
	case !c.ExpiresAt.After(now):
		notes = append(notes, "the token has expired: Azure Redis answers WRONGPASS to it and closes connections it authenticated")
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now) {
		notes = append(notes, "nbf is in the future: the token is not valid yet (check this machine's clock)")
	}
	return notes
}

func hasAudience(aud, want []string) bool {
	for _, a := range aud {
		if slices.Contains(want, strings.TrimSuffix(a, "/")) {
			return true
		}
	}
	return false
}

// printable returns s as it is when every character is printable, else quoted with Go's escapes
// (\x1b, \n, \u202e, ...), so that what a terminal shows is exactly what the claim holds.
func printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || (!unicode.IsGraphic(r) && r != ' ') {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

// age formats a duration as a person reads it: to the second under a day ("42s", "5h12m30s"),
// in days and hours from one day ("366d 0h", not "8784h24m1s").
func age(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 24*time.Hour {
		return d.String()
	}
	return fmt.Sprintf("%dd %dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// relTime formats t in UTC with the time until or since now; "" for the zero time.
func relTime(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now).Round(time.Second)
	var rel string
	switch {
	case d > 0:
		rel = "in " + age(d)
	case d < 0:
		rel = age(-d) + " ago"
	default:
		rel = "now"
	}
	return fmt.Sprintf("%s (%s)", t.UTC().Format(time.RFC3339), rel)
}

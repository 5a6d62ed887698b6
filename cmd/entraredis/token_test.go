package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

func TestTokenPrintsClaims(t *testing.T) {
	iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Hour})
	tok, exp, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	azJSON, err := json.Marshal(map[string]any{"accessToken": tok, "expiresOn": "2030-01-01 00:00:00.000000", "tokenType": "Bearer"})
	require.NoError(t, err)

	tests := []struct {
		name  string
		args  []string
		stdin string
	}{
		{"argument", []string{"token", tok}, ""},
		{"stdin", []string{"token"}, tok + "\n"},
		{"stdin dash", []string{"token", "-"}, "  " + tok + "  \r\n"},
		{"bearer", []string{"token", "Bearer " + tok}, ""},
		{"az account get-access-token", []string{"token"}, string(azJSON)},
		{"token endpoint JSON", []string{"token"}, `{"access_token":"` + tok + `","token_type":"Bearer"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.stdin, tt.args...)
			require.Equal(t, exitOK, code, errOut)
			assert.Regexp(t, `(?m)^oid\s+`+iss.ObjectID()+`$`, out)
			assert.Regexp(t, `(?m)^tid\s+`+iss.TenantID()+`$`, out)
			assert.Regexp(t, `(?m)^aud\s+https://redis.azure.com$`, out)
			assert.Regexp(t, `(?m)^iss\s+https://sts.windows.net/`, out)
			assert.Regexp(t, `(?m)^appid\s+`+entratest.DefaultAppID+`$`, out)
			assert.Regexp(t, `(?m)^exp\s+`+exp.UTC().Format(time.RFC3339)+` \(in (59m5\d|1h0m[01])s\)$`, out)
			assert.Regexp(t, `(?m)^iat\s+.* \((\ds ago|now)\)$`, out)
			assert.NotContains(t, out, "note:")
			// Neither the token nor its signature, in any output (compared without printing them).
			assert.False(t, strings.Contains(out+errOut, sig), "the signature appears in the output")
			assert.False(t, strings.Contains(out+errOut, tok), "the token appears in the output")
		})
	}
}

func TestTokenNotes(t *testing.T) {
	iss := newIssuer(t, entratest.IssuerOptions{})
	expired, _, err := iss.Mint(-time.Minute)
	require.NoError(t, err)
	graph, _, err := iss.MintWith(entratest.TokenOptions{Audience: "https://graph.microsoft.com"})
	require.NoError(t, err)
	early, _, err := iss.MintWith(entratest.TokenOptions{NotBefore: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	noOID := unsignedJWT(t, map[string]any{"aud": "https://redis.azure.com", "exp": time.Now().Add(time.Hour).Unix()})
	noExp := unsignedJWT(t, map[string]any{"aud": []string{"api://x", "https://redis.azure.com/"}, "oid": "o"})

	tests := []struct {
		name, tok, want string
	}{
		{"expired", expired, "the token has expired"},
		{"wrong audience", graph, "aud is not https://redis.azure.com"},
		{"not yet valid", early, "nbf is in the future"},
		{"no oid", noOID, "no oid claim"},
		{"no exp", noExp, "no exp claim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := cli(t, "", "token", tt.tok)
			assert.Equal(t, exitOK, code)
			assert.Contains(t, out, "note: "+tt.want)
		})
	}
	_, out, _ := cli(t, "", "token", noExp)
	assert.NotContains(t, out, "aud is not", "an array audience holding Redis's (with a trailing slash) is fine")
}

// unsignedJWT builds a token with an empty signature, for claims the issuer does not make.
func unsignedJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	require.NoError(t, err)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(p) + "."
}

func TestTokenMalformed(t *testing.T) {
	iss := newIssuer(t, entratest.IssuerOptions{})
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	parts := strings.Split(tok, ".")
	secretish := "c2VjcmV0LXNpZ25hdHVyZS1wYXJ0"

	tests := []struct {
		name, in string
		args     []string
		want     string
	}{
		{"empty stdin", "", nil, "no token given"},
		{"whitespace", " \n\t", nil, "no token given"},
		{"two segments", parts[0] + "." + parts[1], nil, "not a JWT access token"},
		{"four segments", tok + "." + secretish, nil, "not a JWT access token"},
		{"payload not base64", parts[0] + ".!!!." + secretish, nil, "not a JWT access token"},
		{"payload not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("hello")) + "." + secretish, nil, "not a JWT access token"},
		{"payload is an array", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + "." + secretish, nil, "not a JWT access token"},
		{"bad claim type", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"soon"}`)) + "." + secretish, nil, "not a JWT access token"},
		{"signature not base64", parts[0] + "." + parts[1] + ".%%" + secretish, nil, "not a JWT access token"},
		{"bad JSON wrapper", `{"accessToken": ` + secretish, nil, "not valid JSON"},
		{"JSON without token", `{"foo":"` + secretish + `"}`, nil, "no accessToken"},
		{"two arguments", "", []string{"a", "b"}, "give one token"},
		{"too long", strings.Repeat("a", maxTokenInput+1), nil, "over 1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"token"}, tt.args...)
			code, out, errOut := cli(t, tt.in, args...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tt.want)
			assert.False(t, strings.Contains(errOut, secretish), "the input's signature appears in the error")
			assert.False(t, strings.Contains(errOut, parts[1]), "the input's payload appears in the error")
		})
	}
}

func FuzzToken(f *testing.F) {
	f.Add("a.b.c")
	f.Add(`{"accessToken":"x.y.z"}`)
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.")
	f.Add("eyJhbGciOiJub25lIn0.eyJvaWQiOiJcdTAwMWJbMm0iLCJzdWIiOiJhXG5ub3RlOiB4In0.") // oid "\x1b[2m", sub "a\nnote: x"
	f.Fuzz(func(t *testing.T, in string) {
		var out, errOut strings.Builder
		code := runToken(nil, strings.NewReader(in), &out, &errOut)
		if code != exitOK && code != exitUsage {
			t.Fatalf("exit %d", code)
		}
		if i := strings.IndexFunc(out.String(), func(r rune) bool { return r != '\n' && (r < 0x20 || r == 0x7f) }); i >= 0 {
			t.Fatalf("a control character reached the output at %d", i)
		}
		if code == exitOK && strings.Count(in, ".") >= 2 {
			sig := in[strings.LastIndexByte(in, '.')+1:]
			sig = strings.TrimRight(strings.TrimSpace(sig), `"}`)
			if len(sig) >= 8 && strings.Contains(out.String(), sig) {
				t.Fatal("the signature appears in the output")
			}
		}
	})
}

// A claim is the issuer's text: control characters in it reach the terminal escaped, and a newline
// cannot forge a line of its own.
func TestTokenEscapesClaims(t *testing.T) {
	tok := unsignedJWT(t, map[string]any{
		"oid":   "6f1c2b7a\x1b[2J\x1b[31m",
		"sub":   "x\nnote: this token is fine, ignore the rest",
		"tid":   "t\u202eevil", // right-to-left override
		"iss":   "bad\xffutf8", // JSON turns it into U+FFFD, which is then quoted: the claim was not text
		"appid": "plain id",
		"aud":   []string{"https://redis.azure.com", "a\rb"},
		"exp":   time.Now().Add(time.Hour).Unix(),
	})
	code, out, _ := cli(t, "", "token", tok)
	require.Equal(t, exitOK, code)
	t.Logf("output:\n%s", out)
	for _, c := range []string{"\x1b", "\r", "\u202e", "\xff"} {
		assert.NotContains(t, out, c)
	}
	assert.NotRegexp(t, `(?m)^note: this token is fine`, out)
	for _, want := range []string{`"6f1c2b7a\x1b[2J\x1b[31m"`, `"x\nnote: this token is fine, ignore the rest"`, `"t\u202eevil"`, "\"bad\ufffdutf8\"", `"a\rb"`} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, `(?m)^appid\s+plain id$`, out, "printable claims are left as they are")
	assert.Equal(t, 7, strings.Count(out, "\n"), "one line per claim: oid tid aud iss sub appid exp")
}

func TestAge(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{42*time.Second + 400*time.Millisecond, "42s"},
		{12*time.Minute + 5*time.Second, "12m5s"},
		{5*time.Hour + 12*time.Minute + 30*time.Second, "5h12m30s"},
		{8784*time.Hour + 24*time.Minute + time.Second, "366d 0h"},
		{49 * time.Hour, "2d 1h"},
	} {
		assert.Equal(t, tc.want, age(tc.d), tc.d.String())
	}
	now := time.Now()
	assert.Equal(t, now.Add(-8784*time.Hour).UTC().Format(time.RFC3339)+" (366d 0h ago)", relTime(now.Add(-8784*time.Hour), now))
}

// Microsoft documents the scope acca5fbb-.../.default as an alternative: its tokens are accepted.
func TestTokenGUIDAudience(t *testing.T) {
	iss := newIssuer(t, entratest.IssuerOptions{})
	for _, tc := range []struct {
		aud  string
		note bool
	}{
		{"https://redis.azure.com", false},
		{entratest.AudienceAppID, false},
		{"11111111-2222-3333-4444-555555555555", true},
	} {
		tok, _, err := iss.MintWith(entratest.TokenOptions{Audience: tc.aud})
		require.NoError(t, err)
		code, out, _ := cli(t, "", "token", tok)
		require.Equal(t, exitOK, code)
		assert.Equal(t, tc.note, strings.Contains(out, "note: aud is not"), tc.aud)
	}
}

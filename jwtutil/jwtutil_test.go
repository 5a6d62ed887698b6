package jwtutil

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const secret = "TOPSECRETCLAIMVALUE" // put in payloads to check that no error quotes a claim

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// signed mints an RS256 token with a fresh key.
func signed(t testing.TB, claims jwt.MapClaims) string {
	j := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	j.Header["kid"] = "k1" // makes the header's length take padding
	tok, err := j.SignedString(rsaKey())
	require.NoError(t, err)
	return tok
}

var b64 = base64.RawURLEncoding.EncodeToString

// raw builds header.payload.signature from raw JSON texts, unsigned.
func raw(header, payload string) string {
	return b64([]byte(header)) + "." + b64([]byte(payload)) + "." + b64([]byte("sig"))
}

func padded(s string) string { return s + strings.Repeat("=", (4-len(s)%4)%4) }

// entra returns the claims of an Entra ID access token for Azure Redis, with a secret-looking extra claim.
func entra(exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"aud": "https://redis.azure.com", "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
		"iat": exp.Add(-time.Hour).Unix(), "nbf": exp.Add(-time.Hour).Unix(), "exp": exp.Unix(),
		"oid": "6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		"sub": "6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", "appid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
		"xms_secret": secret, "idtyp": "app", "ver": "1.0",
	}
}

func TestParseClaims(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	full := entra(exp)
	want := Claims{
		ObjectID: "6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", TenantID: "72f988bf-86f1-41af-91ab-2d7cd011db47",
		Audience: []string{"https://redis.azure.com"}, Issuer: "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
		Subject: "6f3d2c1b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", AppID: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
		ExpiresAt: exp, IssuedAt: exp.Add(-time.Hour), NotBefore: exp.Add(-time.Hour),
	}
	hdr := `{"alg":"none","typ":"JWT"}`
	payloadJSON := `{"oid":"o","exp":1700000000}`
	for _, tc := range []struct {
		name  string
		token func(t *testing.T) string
		want  Claims
	}{
		{"RS256 Entra token", func(t *testing.T) string { return signed(t, full) }, want},
		{"padded segments", func(t *testing.T) string {
			var h, p, s string
			for n := 0; len(p)%4 == 0; n++ { // a claim that makes the payload take padding too
				c := maps.Clone(full)
				c["pad"] = strings.Repeat("x", n)
				h, p, s, _ = cut3(signed(t, c))
			}
			require.True(t, strings.HasSuffix(padded(p), "=") && strings.HasSuffix(padded(h), "="), "test needs segments that take padding")
			return padded(h) + "." + padded(p) + "." + padded(s)
		}, want},
		{"alg none, empty signature", func(*testing.T) string {
			return b64([]byte(hdr)) + "." + b64([]byte(payloadJSON)) + "."
		}, Claims{ObjectID: "o", ExpiresAt: time.Unix(1700000000, 0).UTC()}},
		{"float exp, aud array, azp", func(*testing.T) string {
			return raw(hdr, `{"exp":1700000000.25,"iat":1.7e9,"aud":["a","b"],"azp":"z"}`)
		}, Claims{Audience: []string{"a", "b"}, AppID: "z", ExpiresAt: time.Unix(1700000000, 250e6).UTC(), IssuedAt: time.Unix(1.7e9, 0).UTC()}},
		{"appid wins over azp", func(*testing.T) string { return raw(hdr, `{"appid":"a","azp":"z"}`) }, Claims{AppID: "a"}},
		{"empty azp leaves appid", func(*testing.T) string { return raw(hdr, `{"appid":"a","azp":""}`) }, Claims{AppID: "a"}},
		{"empty object", func(*testing.T) string { return raw(hdr, `{}`) }, Claims{}},
		{"nulls are absent", func(*testing.T) string {
			return raw(hdr, `{"oid":null,"aud":null,"exp":null,"iat":null,"azp":null}`)
		}, Claims{}},
		{"claim names are case-sensitive", func(*testing.T) string { return raw(hdr, `{"OID":"x","Exp":1}`) }, Claims{}},
		{"unknown alg", func(*testing.T) string { return raw(`{"alg":"ES256K"}`, `{"oid":"o"}`) }, Claims{ObjectID: "o"}},
		{"negative and extreme exp", func(*testing.T) string {
			return raw(hdr, `{"exp":253402300799,"iat":-1.5,"nbf":-62135596800}`)
		}, Claims{ExpiresAt: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), IssuedAt: time.Unix(-2, 5e8).UTC(), NotBefore: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"zero exp is 1970, not absent", func(*testing.T) string { return raw(hdr, `{"exp":0}`) }, Claims{ExpiresAt: time.Unix(0, 0).UTC()}},
		{"unicode and nested junk in other claims", func(*testing.T) string {
			return raw(hdr, `{"oid":"ü\u00e9😀","x":{"y":[1,{"z":null}],"w":1e400}}`)
		}, Claims{ObjectID: "üé😀"}},
		{"empty aud array", func(*testing.T) string { return raw(hdr, `{"aud":[]}`) }, Claims{Audience: []string{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseClaims(tc.token(t))
			require.NoError(t, err)
			assert.Equal(t, tc.want, *c)
		})
	}
}

func cut3(tok string) (h, p, s string, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func TestParseClaimsMalformed(t *testing.T) {
	good := signed(t, entra(time.Now().Add(time.Hour)))
	h, p, s, ok := cut3(good)
	require.True(t, ok)
	hdr := `{"alg":"RS256","typ":"JWT","kid":"` + secret + `"}`
	pl := func(extra string) string { return `{"oid":"` + secret + `","exp":1700000000` + extra + `}` }
	for _, tc := range []struct{ name, token, reason string }{
		{"empty", "", "has 1 segments, want 3"},
		{"one segment", p, "has 1 segments, want 3"},
		{"two segments", h + "." + p, "has 2 segments, want 3"},
		{"four segments", good + "." + s, "has 4 segments, want 3"},
		{"JWE-like five segments", h + "." + p + "." + s + "." + p + "." + s, "has 5 segments, want 3"},
		{"empty header", "." + p + "." + s, "header or payload is empty"},
		{"empty payload", h + ".." + s, "header or payload is empty"},
		{"only dots", "..", "header or payload is empty"},
		{"standard base64 header", strings.Replace(h, h[:1], "+", 1) + "." + p + "." + s, "header is not base64url"},
		{"space in payload", h + "." + p[:10] + " " + p[10:] + "." + s, "payload is not base64url"},
		{"newline in payload", h + "." + p[:10] + "\n" + p[10:] + "." + s, "payload is not base64url"},
		{"too much padding", h + "." + padded(p) + "==" + "." + s, "payload is not base64url"},
		{"padding in the middle", h + "." + p[:8] + "==" + p[8:] + "." + s, "payload is not base64url"},
		{"impossible length", h + "." + p + "." + s[:len(s)-1], "signature is not base64url"},
		{"signature with slash", h + "." + p + "." + s + "/", "signature is not base64url"},
		{"header not JSON", b64([]byte("not json "+secret)) + "." + p + "." + s, "header is not a JSON object"},
		{"header array", b64([]byte(`["`+secret+`"]`)) + "." + p + "." + s, "header is not a JSON object"},
		{"header null", raw("null", pl("")), "header has no alg"},
		{"header without alg", raw(`{"typ":"`+secret+`"}`, pl("")), "header has no alg"},
		{"alg not a string", raw(`{"alg":12345678}`, pl("")), "header has no alg"},
		{"payload not JSON", raw(hdr, `{"oid":"`+secret+`",`), "payload is not a JSON object"},
		{"payload null", raw(hdr, "null"), "payload is not a JSON object"},
		{"payload array", raw(hdr, `["`+secret+`"]`), "payload is not a JSON object"},
		{"payload string", raw(hdr, `"`+secret+`"`), "payload is not a JSON object"},
		{"payload number", raw(hdr, `12345678`), "payload is not a JSON object"},
		{"payload trailing data", raw(hdr, pl("")+`{}`), "payload is not a JSON object"},
		{"oid a number", raw(hdr, `{"oid":12345678,"x":"`+secret+`"}`), "claim oid is not a string"},
		{"tid an object", raw(hdr, pl(`,"tid":{"a":"`+secret+`"}`)), "claim tid is not a string"},
		{"azp an array", raw(hdr, pl(`,"azp":["`+secret+`"]`)), "claim azp is not a string"},
		{"aud a number", raw(hdr, pl(`,"aud":12345678`)), "claim aud is not a string or an array of strings"},
		{"aud with a number", raw(hdr, pl(`,"aud":["`+secret+`",1]`)), "claim aud is not a string or an array of strings"},
		{"aud with null", raw(hdr, pl(`,"aud":["`+secret+`",null]`)), "claim aud is not a string or an array of strings"},
		{"exp a string", raw(hdr, `{"exp":"1700000000","x":"`+secret+`"}`), "claim exp is not a number"},
		{"exp a bool", raw(hdr, pl(`,"exp":true`)), "claim exp is not a number"},
		{"iat an object", raw(hdr, pl(`,"iat":{}`)), "claim iat is not a number"},
		{"nbf an array", raw(hdr, pl(`,"nbf":[1]`)), "claim nbf is not a number"},
		{"exp beyond float64", raw(hdr, pl(`,"exp":1e400`)), "claim exp is out of range"},
		{"exp after year 9999", raw(hdr, pl(`,"exp":253402300800`)), "claim exp is out of range"},
		{"exp huge integer", raw(hdr, pl(`,"exp":123456789012345678901234567890`)), "claim exp is out of range"},
		{"iat before year 1", raw(hdr, pl(`,"iat":-1e12`)), "claim iat is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseClaims(tc.token)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.True(t, errors.Is(err, ErrMalformed))
			assert.Equal(t, "jwtutil: malformed token: "+tc.reason, err.Error())
			assertNoLeak(t, err.Error(), tc.token)
		})
	}
}

// assertNoLeak checks that msg quotes neither the token, nor a segment, nor what they decode to.
func assertNoLeak(t *testing.T, msg, token string) {
	t.Helper()
	assert.False(t, strings.Contains(msg, secret), "error quotes a claim or header value")
	if len(token) >= 8 {
		assert.False(t, strings.Contains(msg, token), "error quotes the token")
	}
	for i, seg := range strings.Split(token, ".") {
		if len(seg) >= 8 {
			assert.False(t, strings.Contains(msg, seg), "error quotes segment %d", i)
			if dec, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "=")); err == nil && len(dec) >= 8 {
				assert.False(t, strings.Contains(msg, string(dec)), "error quotes decoded segment %d", i)
			}
		}
	}
}

func TestRequire(t *testing.T) {
	exp := time.Unix(1700000000, 0).UTC()
	c := &Claims{ObjectID: "o", ExpiresAt: exp}
	oid, err := c.RequireObjectID()
	require.NoError(t, err)
	assert.Equal(t, "o", oid)

	c, err = ParseClaims(raw(`{"alg":"none"}`, `{"tid":"t"}`))
	require.NoError(t, err)
	_, err = c.RequireObjectID()
	assert.ErrorIs(t, err, ErrNoObjectID)
	assert.True(t, c.ExpiresAt.IsZero(), "no exp claim: zero ExpiresAt")
}

// reasonRE is the whole language of ParseClaims's errors: fixed reasons, only a count varies.
var reasonRE = regexp.MustCompile(`^jwtutil: malformed token: (has \d+ segments, want 3|header or payload is empty|` +
	`(header|payload|signature) is not base64url|(header|payload) is not a JSON object|header has no alg|` +
	`claim (oid|tid|iss|sub|appid|azp) is not a string|claim aud is not a string or an array of strings|` +
	`claim (exp|iat|nbf) is (not a number|out of range))$`)

func FuzzParseClaims(f *testing.F) {
	hdr := `{"alg":"RS256","typ":"JWT"}`
	for _, s := range []string{
		"", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d", "a.b.c.d.e",
		signed(f, entra(time.Now().Add(time.Hour))),
		raw(hdr, `{"oid":"o","exp":1700000000}`),
		padded(b64([]byte(hdr))) + "." + padded(b64([]byte(`{"oid":"o","exp":17000000001}`))) + ".",
		raw(hdr, `{"exp":1700000000.999999999,"iat":-0.5,"nbf":0}`),
		raw(hdr, `{"exp":1e308}`), raw(hdr, `{"exp":1e400}`), raw(hdr, `{"exp":-1e400}`),
		raw(hdr, `{"exp":123456789012345678901234567890}`), raw(hdr, `{"exp":"NaN"}`),
		raw(hdr, `{"oid":"\u00fc\ud83d\ude00","aud":["\u0000"]}`), raw(hdr, "{\"oid\":\"\xff\xfe\"}"),
		raw(hdr, `null`), raw(hdr, `[]`), raw(hdr, `"s"`), raw(hdr, `1`), raw(hdr, `true`), raw(hdr, ``),
		raw(hdr, `{"a":{"b":[{"c":[[[[{}]]]]}]},"aud":[[]],"exp":{}}`),
		raw(`null`, `{}`), raw(`{"alg":null}`, `{}`), raw(`[]`, `{}`),
		"eyJhbGciOiJIUzI1NiJ9.e30=.", "eyJ.eyJ.", "!!.??.**", "ä.ö.ü",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := ParseClaims(token)
		if err != nil {
			if c != nil || !errors.Is(err, ErrMalformed) || !reasonRE.MatchString(err.Error()) {
				t.Fatalf("bad error shape (claims %v, error %q)", c != nil, err.Error()) // fixed grammar: safe to print
			}
			return
		}
		if strings.Count(token, ".") != 2 {
			t.Fatal("accepted a token without exactly three segments")
		}
		for _, tm := range []time.Time{c.ExpiresAt, c.IssuedAt, c.NotBefore} {
			if !tm.IsZero() && (tm.Year() < 1 || tm.Year() > 9999) {
				t.Fatal("time out of range")
			}
		}
		if _, err := json.Marshal(c); err != nil {
			t.Fatal("claims do not marshal")
		}
	})
}

func BenchmarkParseClaims(b *testing.B) {
	tok := signed(b, entra(time.Now().Add(time.Hour)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseClaims(tok); err != nil {
			b.Fatal(err)
		}
	}
}

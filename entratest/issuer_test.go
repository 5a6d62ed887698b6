package entratest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testKey is shared by the tests' issuers: generating a key costs ~100 ms under -race.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newTestIssuer(t testing.TB, o *IssuerOptions) *Issuer {
	t.Helper()
	if o == nil {
		o = &IssuerOptions{}
	}
	if o.Key == nil {
		o.Key = testKey()
	}
	iss, err := NewIssuer(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

// verify checks the signature with the issuer's public key and returns the claims.
func verify(t *testing.T, iss *Issuer, tok string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return iss.PublicKey(), nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	require.NoError(t, err)
	require.True(t, parsed.Valid)
	return claims
}

func TestIssuerMintClaims(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{ObjectID: "oid-1", TenantID: "tid-1", AppID: "app-1", Lifetime: time.Minute})
	before := time.Now()
	tok, exp, err := iss.Mint(0)
	require.NoError(t, err)
	c := verify(t, iss, tok)

	assert.Equal(t, "oid-1", c["oid"])
	assert.Equal(t, "oid-1", c["sub"])
	assert.Equal(t, "tid-1", c["tid"])
	assert.Equal(t, "app-1", c["appid"])
	assert.Equal(t, Audience, c["aud"])
	assert.Equal(t, "https://sts.windows.net/tid-1/", c["iss"])
	assert.NotEmpty(t, c["jti"])
	expClaim, err := c.GetExpirationTime()
	require.NoError(t, err)
	assert.True(t, expClaim.Time.Equal(exp), "exp claim equals the returned expiry")
	assert.False(t, exp.Before(before.Add(time.Minute)), "rounded up: at least the lifetime")
	assert.True(t, exp.Before(before.Add(time.Minute+2*time.Second)))
	nbf, err := c.GetNotBefore()
	require.NoError(t, err)
	iat, err := c.GetIssuedAt()
	require.NoError(t, err)
	assert.True(t, nbf.Equal(iat.Time))
	assert.False(t, iat.After(time.Now()))
	assert.Equal(t, "oid-1", iss.ObjectID())
}

func TestIssuerMintVariants(t *testing.T) {
	iss := newTestIssuer(t, nil)
	tests := []struct {
		name    string
		opts    TokenOptions
		expired bool
		aud     string
		oid     string
	}{
		{name: "default", aud: Audience, oid: DefaultObjectID},
		{name: "expired", opts: TokenOptions{Lifetime: -time.Minute}, expired: true, aud: Audience, oid: DefaultObjectID},
		{name: "other user", opts: TokenOptions{ObjectID: "someone-else"}, aud: Audience, oid: "someone-else"},
		{name: "other audience", opts: TokenOptions{Audience: "https://storage.azure.com"}, aud: "https://storage.azure.com", oid: DefaultObjectID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, exp, err := iss.MintWith(tt.opts)
			require.NoError(t, err)
			c := verify(t, iss, tok)
			assert.Equal(t, tt.aud, c["aud"])
			assert.Equal(t, tt.oid, c["oid"])
			assert.Equal(t, tt.expired, exp.Before(time.Now()))
			iat, err := c.GetIssuedAt()
			require.NoError(t, err)
			assert.True(t, iat.Before(exp), "issued before it expires")
		})
	}
}

func TestIssuerTokensDiffer(t *testing.T) {
	iss := newTestIssuer(t, nil)
	a, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	b, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	assert.False(t, a == b, "two tokens minted in the same second differ")
}

func TestIssuerKeys(t *testing.T) {
	a, err := NewIssuer(nil) // its own fresh key
	require.NoError(t, err)
	b := newTestIssuer(t, nil)
	tok, _, err := a.Mint(time.Hour)
	require.NoError(t, err)
	_, err = jwt.Parse(tok, func(*jwt.Token) (any, error) { return b.PublicKey(), nil })
	require.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)
}

func TestIssuerGetToken(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: 3 * time.Second})
	at, err := iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{Scope}})
	require.NoError(t, err)
	c := verify(t, iss, at.Token)
	assert.Equal(t, Audience, c["aud"])
	assert.WithinDuration(t, time.Now().Add(3*time.Second), at.ExpiresOn, 1500*time.Millisecond)

	iss.SetLifetime(time.Hour)
	at, err = iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"api://other/.default"}})
	require.NoError(t, err)
	c = verify(t, iss, at.Token)
	assert.Equal(t, "api://other", c["aud"])
	assert.WithinDuration(t, time.Now().Add(time.Hour), at.ExpiresOn, 1500*time.Millisecond)

	_, err = iss.GetToken(context.Background(), policy.TokenRequestOptions{})
	require.Error(t, err)
	assert.Equal(t, IssuerStats{Served: 2}, iss.Stats())

	require.NoError(t, iss.Close())
	_, err = iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{Scope}})
	require.ErrorIs(t, err, ErrClosed)
	_, _, err = iss.Mint(time.Minute)
	require.NoError(t, err, "minting still works after Close")
}

func TestIssuerFaults(t *testing.T) {
	get := func(iss *Issuer) error {
		_, err := iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{Scope}})
		return err
	}
	t.Run("fail next", func(t *testing.T) {
		iss := newTestIssuer(t, nil)
		iss.FailNext(2, http.StatusTooManyRequests)
		for range 2 {
			err := get(iss)
			require.ErrorIs(t, err, ErrInjected)
			var fe *FaultError
			require.True(t, errors.As(err, &fe))
			assert.Equal(t, http.StatusTooManyRequests, fe.StatusCode)
			assert.Equal(t, time.Second, fe.RetryAfter)
			assert.Contains(t, err.Error(), "429")
		}
		require.NoError(t, get(iss))
		assert.Equal(t, IssuerStats{Served: 1, Failed: 2}, iss.Stats())
	})
	t.Run("fail for", func(t *testing.T) {
		iss := newTestIssuer(t, nil)
		iss.FailFor(300*time.Millisecond, 0)
		err := get(iss)
		var fe *FaultError
		require.True(t, errors.As(err, &fe))
		assert.Equal(t, http.StatusInternalServerError, fe.StatusCode, "0 means 500")
		assert.Zero(t, fe.RetryAfter)
		require.Eventually(t, func() bool { return get(iss) == nil }, 3*time.Second, 20*time.Millisecond)
		iss.FailFor(time.Hour, http.StatusServiceUnavailable)
		require.Error(t, get(iss))
		iss.FailFor(0, 0)
		require.NoError(t, get(iss))
	})
	t.Run("latency honours ctx", func(t *testing.T) {
		iss := newTestIssuer(t, nil)
		iss.SetLatency(time.Hour)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := iss.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{Scope}})
		require.ErrorIs(t, err, context.DeadlineExceeded)

		iss.SetLatency(100 * time.Millisecond)
		start := time.Now()
		require.NoError(t, get(iss))
		assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
	})
}

func TestIssuerErrorsHoldNoToken(t *testing.T) {
	iss := newTestIssuer(t, nil)
	tok, _, err := iss.Mint(time.Hour)
	require.NoError(t, err)
	iss.FailNext(1, http.StatusTooManyRequests)
	_, err = iss.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{Scope}})
	require.Error(t, err)
	// A token's signature segment is unique to it; no error may contain any of its segments.
	for _, seg := range strings.Split(tok, ".")[1:] {
		assert.False(t, strings.Contains(err.Error(), seg))
	}
}

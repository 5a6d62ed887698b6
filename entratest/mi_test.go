package entratest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// noRetry keeps azidentity from retrying failed requests, so a test sees each answer.
var noRetry = azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}

func redisScope() policy.TokenRequestOptions {
	return policy.TokenRequestOptions{Scopes: []string{Scope}}
}

func randomID(t *testing.T) string {
	var b [8]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "app-" + hex.EncodeToString(b[:])
}

func TestManagedIdentityRealCredential(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	require.NoError(t, err)

	at, err := cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)
	c := verify(t, iss, at.Token)
	assert.Equal(t, iss.ObjectID(), c["oid"])
	assert.Equal(t, Audience, c["aud"])
	exp, err := c.GetExpirationTime()
	require.NoError(t, err)
	assert.True(t, at.ExpiresOn.Equal(exp.Time), "expires_on carried to AccessToken.ExpiresOn")
	assert.Equal(t, IssuerStats{Served: 1}, iss.Stats())

	// A token that expires within 5 minutes is never served from azidentity's cache: every
	// GetToken is a request.
	at2, err := cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)
	assert.False(t, at.Token == at2.Token)
	assert.Equal(t, IssuerStats{Served: 2}, iss.Stats())
}

func TestManagedIdentityCachesLongTokens(t *testing.T) {
	// A distinct user-assigned client ID keeps this long-lived token out of the cache entry other
	// tests of this binary read (MSAL's cache is process-wide).
	appID := randomID(t)
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: 10 * time.Minute, AppID: appID})
	iss.SetManagedIdentityEnv(t)
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(appID)})
	require.NoError(t, err)
	for range 3 {
		_, err := cred.GetToken(context.Background(), redisScope())
		require.NoError(t, err)
	}
	assert.Equal(t, IssuerStats{Served: 1}, iss.Stats(), "10-minute token served from azidentity's cache")
}

func TestManagedIdentityUserAssigned(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)
	tests := []struct {
		name string
		id   azidentity.ManagedIDKind
		ok   bool
	}{
		{name: "client id", id: azidentity.ClientID(DefaultAppID), ok: true},
		{name: "object id", id: azidentity.ObjectID(DefaultObjectID), ok: true},
		{name: "resource id", id: azidentity.ResourceID("/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z"), ok: true},
		{name: "other client id", id: azidentity.ClientID("not-assigned")},
		{name: "other object id", id: azidentity.ObjectID("not-assigned")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: tt.id, ClientOptions: noRetry})
			require.NoError(t, err)
			_, err = cred.GetToken(context.Background(), redisScope())
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "400")
		})
	}
}

func TestManagedIdentityFaults(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)

	t.Run("retried by azidentity", func(t *testing.T) {
		cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 10 * time.Millisecond}},
		})
		require.NoError(t, err)
		before := iss.Stats()
		iss.FailNext(1, http.StatusInternalServerError)
		_, err = cred.GetToken(context.Background(), redisScope())
		require.NoError(t, err)
		after := iss.Stats()
		assert.Equal(t, before.Failed+1, after.Failed)
		assert.Equal(t, before.Served+1, after.Served)
	})
	t.Run("status reaches the caller", func(t *testing.T) {
		cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: noRetry})
		require.NoError(t, err)
		for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
			iss.FailFor(time.Hour, status)
			_, err = cred.GetToken(context.Background(), redisScope())
			require.Error(t, err)
			assert.Contains(t, err.Error(), strconv.Itoa(status))
		}
		iss.FailFor(0, 0)
		_, err = cred.GetToken(context.Background(), redisScope())
		require.NoError(t, err)
	})
	t.Run("latency and ctx", func(t *testing.T) {
		cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ClientOptions: noRetry})
		require.NoError(t, err)
		iss.SetLatency(time.Hour)
		defer iss.SetLatency(0)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = cred.GetToken(ctx, redisScope())
		require.Error(t, err)
		// azidentity reports the deadline in its text but does not wrap ctx.Err().
		assert.Contains(t, err.Error(), "deadline exceeded")
		assert.Less(t, time.Since(start), 5*time.Second)
	})
}

func TestManagedIdentityProtocol(t *testing.T) {
	iss := newTestIssuer(t, nil)
	endpoint, header, err := iss.ServeManagedIdentity()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(endpoint, "http://127.0.0.1:"))
	e2, h2, err := iss.ServeManagedIdentity()
	require.NoError(t, err)
	assert.Equal(t, endpoint, e2, "served once")
	assert.True(t, header == h2)

	good := url.Values{"api-version": {"2019-08-01"}, "resource": {Audience}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	tests := []struct {
		name   string
		method string
		header string
		query  url.Values
		status int
	}{
		{name: "ok", header: header, query: good, status: 200},
		{name: "no header", query: good, status: 401},
		{name: "wrong header", header: "nope", query: good, status: 401},
		{name: "post", method: http.MethodPost, header: header, query: good, status: 405},
		{name: "wrong api-version", header: header, query: with("api-version", "2017-09-01"), status: 400},
		{name: "no api-version", header: header, query: with("api-version", ""), status: 400},
		{name: "no resource", header: header, query: with("resource", ""), status: 400},
		{name: "wrong client_id", header: header, query: with("client_id", "x"), status: 400},
		{name: "two selectors", header: header, query: func() url.Values {
			q := with("client_id", DefaultAppID)
			q.Set("object_id", DefaultObjectID)
			return q
		}(), status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, endpoint+"?"+tt.query.Encode(), nil)
			require.NoError(t, err)
			if tt.header != "" {
				req.Header.Set("X-IDENTITY-HEADER", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tt.status, resp.StatusCode)
			var body map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			if tt.status != 200 {
				assert.NotEmpty(t, body["error"])
				assert.NotContains(t, body, "access_token")
				return
			}
			assert.Equal(t, "Bearer", body["token_type"])
			assert.Equal(t, Audience, body["resource"])
			expOn, ok := body["expires_on"].(string)
			require.True(t, ok, "expires_on is a string in api-version 2019-08-01")
			sec, err := strconv.ParseInt(expOn, 10, 64)
			require.NoError(t, err)
			assert.WithinDuration(t, time.Now().Add(DefaultLifetime), time.Unix(sec, 0), 2*time.Second)
			tok, _ := body["access_token"].(string)
			verify(t, iss, tok)
		})
	}
	assert.Equal(t, int64(len(tests)-1), iss.Stats().Rejected)

	t.Run("429 has Retry-After", func(t *testing.T) {
		iss.FailFor(2500*time.Millisecond, http.StatusTooManyRequests)
		defer iss.FailFor(0, 0)
		req, err := http.NewRequest(http.MethodGet, endpoint+"?"+good.Encode(), nil)
		require.NoError(t, err)
		req.Header.Set("X-IDENTITY-HEADER", header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "3", resp.Header.Get("Retry-After"))
	})
}

func TestManagedIdentityCloseLeavesNoGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	iss, err := NewIssuer(&IssuerOptions{Key: testKey()})
	require.NoError(t, err)
	endpoint, header, err := iss.ServeManagedIdentity()
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, endpoint+"?api-version=2019-08-01&resource="+url.QueryEscape(Audience), nil)
	require.NoError(t, err)
	req.Header.Set("X-IDENTITY-HEADER", header)
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.NoError(t, iss.Close())
	tr.CloseIdleConnections()
	_, err = http.Get(endpoint)
	require.Error(t, err, "the endpoint is gone")
	_, _, err = iss.ServeManagedIdentity()
	require.Error(t, err)
	testutil.WaitGoroutines(t, base)
}

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

// Each identity attached to the resource answers with its own oid and appid, whichever way it is
// named; an identity not attached gets App Service's 400.
func TestManagedIdentityUserAssigned(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)
	ua := ManagedIdentity{
		ClientID:   "1c0f5a3e-7b2d-4e8f-9a61-3d5c7e9b0f21",
		ObjectID:   "8e2d4f6a-1b3c-4d5e-8f70-a1b2c3d4e5f6",
		ResourceID: "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cache-reader",
	}
	iss.AddManagedIdentity(ua)
	iss.AddManagedIdentity(ManagedIdentity{ClientID: "2c0f5a3e-7b2d-4e8f-9a61-3d5c7e9b0f22", ObjectID: "9e2d4f6a-1b3c-4d5e-8f70-a1b2c3d4e5f7"})
	tests := []struct {
		name     string
		id       azidentity.ManagedIDKind
		oid, app string // "" : refused
	}{
		{name: "system-assigned", oid: DefaultObjectID, app: DefaultAppID},
		{name: "system-assigned by client id", id: azidentity.ClientID(DefaultAppID), oid: DefaultObjectID, app: DefaultAppID},
		{name: "user-assigned by client id", id: azidentity.ClientID(ua.ClientID), oid: ua.ObjectID, app: ua.ClientID},
		{name: "user-assigned by object id", id: azidentity.ObjectID(ua.ObjectID), oid: ua.ObjectID, app: ua.ClientID},
		{name: "user-assigned by resource id", id: azidentity.ResourceID(ua.ResourceID), oid: ua.ObjectID, app: ua.ClientID},
		{name: "another user-assigned", id: azidentity.ClientID("2c0f5a3e-7b2d-4e8f-9a61-3d5c7e9b0f22"), oid: "9e2d4f6a-1b3c-4d5e-8f70-a1b2c3d4e5f7", app: "2c0f5a3e-7b2d-4e8f-9a61-3d5c7e9b0f22"},
		{name: "client id not attached", id: azidentity.ClientID("not-assigned")},
		{name: "object id not attached", id: azidentity.ObjectID("not-assigned")},
		{name: "resource id not attached", id: azidentity.ResourceID(ua.ResourceID + "-other")},
		{name: "object id given as client id", id: azidentity.ClientID(ua.ObjectID)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: noRetry}
			if tt.id != nil {
				o.ID = tt.id
			}
			cred, err := azidentity.NewManagedIdentityCredential(o)
			require.NoError(t, err)
			at, err := cred.GetToken(context.Background(), redisScope())
			if tt.oid == "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "400")
				assert.Contains(t, err.Error(), "No User Assigned or Delegated Managed Identity found")
				return
			}
			require.NoError(t, err)
			c := verify(t, iss, at.Token)
			assert.Equal(t, tt.oid, c["oid"])
			assert.Equal(t, tt.app, c["appid"])
		})
	}
}

// App Service's protocol spells the object ID principal_id too.
func TestManagedIdentityPrincipalID(t *testing.T) {
	iss := newTestIssuer(t, nil)
	iss.AddManagedIdentity(ManagedIdentity{ClientID: "c1", ObjectID: "o1"})
	endpoint, header, err := iss.ServeManagedIdentity()
	require.NoError(t, err)
	for id, want := range map[string]int{"o1": 200, "c1": 400} {
		q := url.Values{"api-version": {"2019-08-01"}, "resource": {Audience}, "principal_id": {id}}
		req, err := http.NewRequest(http.MethodGet, endpoint+"?"+q.Encode(), nil)
		require.NoError(t, err)
		req.Header.Set("X-IDENTITY-HEADER", header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var body map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, id)
		if want == 200 {
			assert.Equal(t, "c1", body["client_id"])
			assert.Equal(t, "o1", verify(t, iss, body["access_token"].(string))["oid"])
		}
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
				assert.True(t, body["error"] != nil || body["message"] != nil, "an error body: %v", body)
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

package entratest

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clientSecretSetup serves the client-credentials flow and returns credential options that reach
// it (authority host, a transport trusting the test CA, no instance discovery).
func clientSecretSetup(t *testing.T, iss *Issuer, secret string) (*azidentity.ClientSecretCredentialOptions, *http.Client) {
	t.Helper()
	ca, err := NewTestCA()
	require.NoError(t, err)
	srv, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	host, err := iss.ServeClientSecret(srv, secret)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(host, "https://127.0.0.1:"))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLSConfig()}}
	t.Cleanup(hc.CloseIdleConnections)
	return &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
			Transport: hc,
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		DisableInstanceDiscovery: true,
	}, hc
}

func TestClientSecretRealCredential(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: 10 * time.Minute})
	opts, _ := clientSecretSetup(t, iss, "s3cret")
	cred, err := azidentity.NewClientSecretCredential(iss.TenantID(), iss.AppID(), "s3cret", opts)
	require.NoError(t, err)
	at, err := cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)
	c := verify(t, iss, at.Token)
	assert.Equal(t, iss.ObjectID(), c["oid"])
	assert.Equal(t, Audience, c["aud"])
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), at.ExpiresOn, 2*time.Second)

	// The credential caches a token that has more than 5 minutes left.
	at2, err := cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)
	assert.True(t, at.Token == at2.Token)
	assert.Equal(t, int64(1), iss.Stats().Served)
}

func TestClientSecretRefusals(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	opts, _ := clientSecretSetup(t, iss, "s3cret")
	tests := []struct {
		name, tenant, client, secret string
		scope                        string
		want                         string
	}{
		{name: "wrong secret", secret: "nope", want: "invalid_client"},
		{name: "unknown client", client: "someone", want: "unauthorized_client"},
		{name: "unknown tenant", tenant: "00000000-0000-0000-0000-000000000000", want: "400"},
		{name: "scope without .default", scope: "https://redis.azure.com/user_impersonation", want: "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant, client, secret, scope := iss.TenantID(), iss.AppID(), "s3cret", Scope
			if tt.tenant != "" {
				tenant = tt.tenant
			}
			if tt.client != "" {
				client = tt.client
			}
			if tt.secret != "" {
				secret = tt.secret
			}
			if tt.scope != "" {
				scope = tt.scope
			}
			cred, err := azidentity.NewClientSecretCredential(tenant, client, secret, opts)
			require.NoError(t, err)
			_, err = cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{scope}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	assert.Zero(t, iss.Stats().Served)
}

func TestClientSecretFaults(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	opts, hc := clientSecretSetup(t, iss, "s3cret")
	cred, err := azidentity.NewClientSecretCredential(iss.TenantID(), iss.AppID(), "s3cret", opts)
	require.NoError(t, err)
	iss.FailNext(1, http.StatusTooManyRequests)
	_, err = cred.GetToken(context.Background(), redisScope())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "429")
	_, err = cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)

	// Raw: a GET to the token endpoint and an unknown path are refused.
	host, err := iss.ServeClientSecret(&tls.Config{}, "ignored")
	require.NoError(t, err, "served once: later calls return the same host")
	for path, status := range map[string]int{iss.TenantID() + "/oauth2/v2.0/token": 405, "nowhere": 404} {
		resp, err := hc.Get(host + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, status, resp.StatusCode, path)
	}
	resp, err := hc.PostForm(host+iss.TenantID()+"/oauth2/v2.0/token", url.Values{"grant_type": {"password"}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 400, resp.StatusCode)
}

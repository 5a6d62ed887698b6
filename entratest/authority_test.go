package entratest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// authoritySetup serves the issuer's authority over TLS and returns client options that reach it
// and nothing else: the transport fails the test on a dial to anything but loopback.
func authoritySetup(t *testing.T, iss *Issuer) (azcore.ClientOptions, string) {
	t.Helper()
	ca, err := NewTestCA()
	require.NoError(t, err)
	srv, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	host, err := iss.ServeAuthority(srv)
	require.NoError(t, err)
	d := &net.Dialer{}
	tr := &http.Transport{
		TLSClientConfig: ca.ClientTLSConfig(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			h, _, _ := net.SplitHostPort(addr)
			if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
				t.Errorf("dial to %s: only loopback is allowed", addr)
				return nil, net.UnknownNetworkError("not loopback")
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
		Transport: &http.Client{Transport: tr},
		Retry:     noRetry.Retry,
	}, host
}

func TestClientCertificateRealCredential(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	co, _ := authoritySetup(t, iss)
	cc, err := NewClientCertificate(testKey(), time.Time{}, time.Time{})
	require.NoError(t, err)
	iss.AddCertificate(cc.Cert)
	pemData, err := cc.PEM()
	require.NoError(t, err)
	certs, key, err := azidentity.ParseCertificates(pemData, nil)
	require.NoError(t, err)
	cred, err := azidentity.NewClientCertificateCredential(iss.TenantID(), iss.AppID(), certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: true})
	require.NoError(t, err)
	at, err := cred.GetToken(context.Background(), redisScope())
	require.NoError(t, err)
	c := verify(t, iss, at.Token)
	assert.Equal(t, iss.ObjectID(), c["oid"])
	assert.Equal(t, Audience, c["aud"])
	assert.Len(t, iss.AssertionsSeen(), 1, "one client assertion accepted")
	assert.Equal(t, IssuerStats{Served: 1}, iss.Stats())
}

// assertion signs a certificate assertion by hand, for what MSAL never sends (RS256 with x5t, an
// expired one, another audience).
func assertion(t *testing.T, cc *ClientCertificate, claims jwt.MapClaims, sha1Thumbprint bool) string {
	t.Helper()
	m := jwt.SigningMethod(jwt.SigningMethodPS256)
	tok := jwt.NewWithClaims(m, claims)
	if sha1Thumbprint {
		sum := sha1.Sum(cc.Cert.Raw) //nolint:gosec // x5t
		tok = jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
	} else {
		sum := sha256Sum(cc.Cert)
		tok.Header["x5t#S256"] = base64.StdEncoding.EncodeToString(sum)
	}
	s, err := tok.SignedString(cc.Key)
	require.NoError(t, err)
	return s
}

func sha256Sum(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.Raw)
	return sum[:]
}

// otherKey is a second key, shared by the tests (generating one is slow under -race).
var otherKeyOnce = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func otherKey(*testing.T) *rsa.PrivateKey { return otherKeyOnce() }

// TestClientAssertionRefusals drives the real ClientCertificateCredential and
// ClientAssertionCredential into each refusal and checks Entra's AADSTS code in the error.
func TestClientAssertionRefusals(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	co, host := authoritySetup(t, iss)
	registered, err := NewClientCertificate(testKey(), time.Time{}, time.Time{})
	require.NoError(t, err)
	iss.AddCertificate(registered.Cert)
	other, err := NewClientCertificate(testKey(), time.Time{}, time.Time{}) // same key, other certificate
	require.NoError(t, err)
	expired, err := NewClientCertificate(testKey(), time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	iss.AddCertificate(expired.Cert)
	endpoint := strings.TrimSuffix(host, "/") + "/" + iss.TenantID() + "/oauth2/v2.0/token"
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"aud": endpoint, "iss": iss.AppID(), "sub": iss.AppID(), "jti": "j-" + randomID(t),
			"nbf": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	byCert := func(cc *ClientCertificate, client string) func() (azcore.TokenCredential, error) {
		return func() (azcore.TokenCredential, error) {
			return azidentity.NewClientCertificateCredential(iss.TenantID(), client, []*x509.Certificate{cc.Cert}, cc.Key,
				&azidentity.ClientCertificateCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: true})
		}
	}
	byAssertion := func(a string) func() (azcore.TokenCredential, error) {
		return func() (azcore.TokenCredential, error) {
			return azidentity.NewClientAssertionCredential(iss.TenantID(), iss.AppID(),
				func(context.Context) (string, error) { return a, nil },
				&azidentity.ClientAssertionCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: true})
		}
	}
	tests := []struct {
		name string
		cred func() (azcore.TokenCredential, error)
		want string // "" : accepted
	}{
		{"registered certificate", byCert(registered, iss.AppID()), ""},
		{"RS256 with a SHA-1 x5t", byAssertion(assertion(t, registered, claims(nil), true)), ""},
		{"certificate not registered", byCert(other, iss.AppID()), "AADSTS700027"},
		{"expired certificate", byCert(expired, iss.AppID()), "AADSTS700027"},
		{"unknown client", byCert(registered, "11111111-2222-3333-4444-555555555555"), "AADSTS700016"},
		{"expired assertion", byAssertion(assertion(t, registered, claims(func(c jwt.MapClaims) {
			c["nbf"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
		}), false)), "AADSTS700024"},
		{"assertion not yet valid", byAssertion(assertion(t, registered, claims(func(c jwt.MapClaims) {
			c["nbf"] = time.Now().Add(time.Hour).Unix()
		}), false)), "AADSTS700024"},
		{"audience of another endpoint", byAssertion(assertion(t, registered, claims(func(c jwt.MapClaims) {
			c["aud"] = "https://login.microsoftonline.com/" + iss.TenantID() + "/oauth2/v2.0/token"
		}), false)), "AADSTS700023"},
		{"another application's assertion", byAssertion(assertion(t, registered, claims(func(c jwt.MapClaims) {
			c["iss"], c["sub"] = "someone-else", "someone-else"
		}), false)), "AADSTS700021"},
		{"signature of another key", byAssertion(func() string {
			a := assertion(t, registered, claims(nil), false)
			b := assertion(t, &ClientCertificate{Cert: registered.Cert, Key: otherKey(t)}, claims(nil), false)
			return a[:strings.LastIndex(a, ".")] + b[strings.LastIndex(b, "."):]
		}()), "AADSTS700027"},
		{"not a JWT", byAssertion("not-a-jwt"), "AADSTS50027"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := tt.cred()
			require.NoError(t, err)
			at, err := cred.GetToken(context.Background(), redisScope())
			if tt.want == "" {
				require.NoError(t, err)
				verify(t, iss, at.Token)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			t.Logf("%s: %s", tt.want, firstLine(err.Error(), tt.want))
		})
	}
	assert.Equal(t, int64(2), iss.Stats().Served)
	assert.Equal(t, int64(len(tests)-2), iss.Stats().Rejected)
}

// firstLine returns the line of s holding needle.
func firstLine(s, needle string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, needle) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// writeToken writes a federated token file as the kubelet does: a new file renamed over the old.
func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(tok), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestWorkloadIdentityRealCredential(t *testing.T) {
	iss := newTestIssuer(t, &IssuerOptions{Lifetime: time.Minute})
	co, _ := authoritySetup(t, iss)
	iss.AddFederatedCredential(FederatedCredential{}) // the default service account
	iss.AddFederatedCredential(FederatedCredential{Subject: "system:serviceaccount:prod:api"})
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	tests := []struct {
		name string
		opts FederatedTokenOptions
		want string // "" : accepted
	}{
		{"default service account", FederatedTokenOptions{}, ""},
		{"another registered subject", FederatedTokenOptions{Subject: "system:serviceaccount:prod:api"}, ""},
		{"subject not registered", FederatedTokenOptions{Subject: "system:serviceaccount:default:other"}, "AADSTS700213"},
		{"issuer not registered", FederatedTokenOptions{Issuer: "https://oidc.prod-aks.azure.com/other/"}, "AADSTS700211"},
		{"audience not registered", FederatedTokenOptions{Audience: "api://other"}, "AADSTS700212"},
		{"expired token", FederatedTokenOptions{Lifetime: -time.Minute}, "AADSTS700024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, jti, _, err := iss.MintFederated(tt.opts)
			require.NoError(t, err)
			writeToken(t, file, tok)
			// A credential per case: each reads the file once, then keeps its content 10 minutes.
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				ClientID: iss.AppID(), TenantID: iss.TenantID(), TokenFilePath: file,
				ClientOptions: co, DisableInstanceDiscovery: true,
			})
			require.NoError(t, err)
			at, err := cred.GetToken(context.Background(), redisScope())
			if tt.want == "" {
				require.NoError(t, err)
				assert.Equal(t, iss.ObjectID(), verify(t, iss, at.Token)["oid"])
				assert.Equal(t, 1, iss.AssertionsSeen()[jti], "the token in the file was presented")
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			t.Logf("%s: %s", tt.want, firstLine(err.Error(), tt.want))
		})
	}

	t.Run("token signed by another issuer", func(t *testing.T) {
		other := newTestIssuer(t, &IssuerOptions{Key: otherKey(t), TenantID: iss.TenantID()})
		tok, _, _, err := other.MintFederated(FederatedTokenOptions{Issuer: iss.FederatedIssuerURL()})
		require.NoError(t, err)
		writeToken(t, file, tok)
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientID: iss.AppID(), TenantID: iss.TenantID(), TokenFilePath: file, ClientOptions: co, DisableInstanceDiscovery: true,
		})
		require.NoError(t, err)
		_, err = cred.GetToken(context.Background(), redisScope())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "AADSTS50013")
	})
}

// FuzzCheckAssertion: whatever a client sends as client_assertion, the token endpoint answers
// without panicking, and accepts nothing it did not sign or register.
func FuzzCheckAssertion(f *testing.F) {
	iss := newTestIssuer(f, nil)
	iss.AddFederatedCredential(FederatedCredential{})
	cc, err := NewClientCertificate(testKey(), time.Time{}, time.Time{})
	require.NoError(f, err)
	iss.AddCertificate(cc.Cert)
	fed, _, _, err := iss.MintFederated(FederatedTokenOptions{})
	require.NoError(f, err)
	for _, s := range []string{fed, "", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "eyJ4NXQiOjF9.e30.x", "eyJ4NXQjUzI1NiI6WyJ4Il19.e30.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		rf := iss.checkAssertion(a, "https://127.0.0.1:1/"+DefaultTenantID+"/oauth2/v2.0/token")
		if rf == nil && a != fed {
			t.Fatalf("accepted an assertion it did not mint")
		}
	})
}

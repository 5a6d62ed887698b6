package e2e_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/envvar"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/provider/certcred"
	"github.com/entraredis/entraredis/retry"
)

// Every identity kind of docs/identities.md's table, each through the real azidentity
// credential, the provider and entraredis.NewClient to a TLS gateway in front of redis-server,
// across token rotations: tokens live 3 s, so each test sees several.

// idLifetime is the access tokens' lifetime: short, so rotations happen in seconds, and under the
// 5 minutes past which azidentity's caches (MSAL's process-wide one for managed identity) would
// hand one test's token to the next.
const idLifetime = 3 * time.Second

// A user-assigned identity attached to the emulated resource, with its own object ID (the Redis
// username), distinct from the system-assigned one.
var userAssigned = entratest.ManagedIdentity{
	ClientID:   "5b7c9d1e-3f5a-4b7c-9d1e-3f5a7b9c1d2e",
	ObjectID:   "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
	ResourceID: "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/redis-client",
}

// idKey is the issuers' signing key and the service principal's certificate key: generating
// 2048-bit keys is slow under -race.
var idKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// idWorld is one test's Entra: the issuer with its HTTPS authority (secret, certificate, federated
// credential registered) and managed-identity endpoint, and a TLS gateway in front of redis-server.
type idWorld struct {
	t      *testing.T
	iss    *entratest.Issuer
	cert   *entratest.ClientCertificate
	secret string
	host   string               // the authority host
	co     azcore.ClientOptions // reaches the authority, and loopback only
	gw     *entratest.Gateway   // TLS
	tlsCfg *tls.Config          // trusts the gateway's and the authority's CA
	dials  atomic.Int64         // connections the credentials' transport opened
}

func newIDWorld(t *testing.T) *idWorld {
	t.Helper()
	if _, err := os.Stat("/proc"); err == nil {
		testutil.CheckGoroutines(t) // registered first: runs after every other cleanup
	}
	clearIdentityEnv(t)
	w := &idWorld{t: t, secret: "s3cret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: idLifetime, Key: idKey()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	w.iss = iss
	w.cert, err = entratest.NewClientCertificate(idKey(), time.Time{}, time.Time{})
	require.NoError(t, err)
	iss.SetClientSecret(w.secret)
	iss.AddCertificate(w.cert.Cert)
	iss.AddFederatedCredential(entratest.FederatedCredential{})
	iss.AddManagedIdentity(userAssigned)

	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srv, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	w.host, err = iss.ServeAuthority(srv)
	require.NoError(t, err)
	iss.SetManagedIdentityEnv(t)
	w.tlsCfg = ca.ClientTLSConfig()

	var d net.Dialer
	tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig(), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(addr); net.ParseIP(h) == nil || !net.ParseIP(h).IsLoopback() {
			t.Errorf("a credential dialled %s: nothing may leave loopback", addr)
			return nil, net.UnknownNetworkError("not loopback")
		}
		w.dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	w.co = azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: w.host},
		Transport: &http.Client{Transport: tr},
		// The SDK's default retries (0.8 s, 2.4 s, 5.6 s) would outlast a 3 s token.
		Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond},
	}

	rs := entratest.StartRedis(t, nil)
	gwTLS, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	w.gw = entratest.StartGateway(t, iss, rs.Addr(), &entratest.GatewayOptions{TLS: gwTLS})
	return w
}

// clearIdentityEnv keeps the developer's own Azure settings out of the test.
func clearIdentityEnv(t *testing.T) {
	for _, v := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
		"AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_USERNAME", "AZURE_PASSWORD",
		"AZURE_TOKEN_CREDENTIALS", "AZURE_ADDITIONALLY_ALLOWED_TENANTS", "AZURE_REGIONAL_AUTHORITY_NAME",
		"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT",
		"AZURE_REDIS_CLIENTID", "AZURE_REDIS_TENANTID", "AZURE_REDIS_CLIENTSECRET"} {
		t.Setenv(v, "")
		_ = os.Unsetenv(v) // azidentity tells "unset" from "empty" for some (AZURE_TOKEN_CREDENTIALS)
	}
}

// options are the provider options of these tests: refreshes counted, the backoff kept short.
func (w *idWorld) options(refreshed *atomic.Int64) *provider.Options {
	return &provider.Options{
		Retry: retry.Policy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		OnEvent: func(e provider.Event) {
			if e.Kind == provider.EventRefreshed {
				refreshed.Add(1)
			}
		},
	}
}

// rotations is how many tokens beyond the first a proof waits for.
const rotations = 2

// prove runs INCR load through entraredis.NewClient(p) against the TLS gateway until the provider
// has cached `rotations` tokens after the first, then checks: no error reached a caller, no
// acknowledged INCR was lost, the gateway refused no AUTH, and the username is the identity's own
// object ID. midway, when set, runs once after the first rotation (a kubelet rewriting a file...).
func (w *idWorld) prove(name string, p *provider.Provider, refreshed *atomic.Int64, wantOID string, midway func()) {
	t := w.t
	t.Helper()
	t.Cleanup(func() { _ = p.Close() })
	c := entraredis.NewClient(p, &redis.Options{Addr: w.gw.Addr(), TLSConfig: w.tlsCfg.Clone()})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	require.NoError(t, c.Ping(ctx).Err(), "%s: first command", name)
	first, ok := p.Token()
	require.True(t, ok)
	assert.Equal(t, wantOID, first.Username, "%s: the username is the identity's object ID", name)

	start := time.Now()
	l := startIncr(c, "id", 4, 5*time.Second, 5*time.Millisecond)
	deadline := time.Now().Add(30 * time.Second)
	ran := midway == nil
	for {
		info, ok := p.Token()
		if ok && info.Generation >= first.Generation+1 && !ran {
			midway()
			ran = true
		}
		if ok && info.Generation >= first.Generation+rotations && ran {
			break
		}
		if time.Now().After(deadline) {
			l.Stop()
			t.Fatalf("%s: %d token rotations did not happen within 30 s (errors: %v)", name, rotations, l.errorTexts())
		}
		time.Sleep(20 * time.Millisecond) // polling the provider's generation, with a deadline
	}
	// A little traffic on the last token, then stop.
	time.Sleep(200 * time.Millisecond)
	l.Stop()
	acked, failed := l.total()
	last, _ := p.Token()
	gs := w.gw.Stats()
	t.Logf("%s: %d token rotations in %s (%d refresh events), %d INCRs acknowledged, %d errors; gateway: %d connections, %d AUTH accepted, %d refused, %d closed at expiry; issuer served %d tokens; username %s",
		name, last.Generation-first.Generation, time.Since(start).Round(10*time.Millisecond), refreshed.Load(), acked, failed,
		gs.Connections, gs.AuthAccepted, gs.AuthRefused, gs.ExpiryCloses, w.iss.Stats().Served, last.Username)
	assert.Zero(t, failed, "%s: errors reached callers: %v", name, l.errorTexts())
	assert.GreaterOrEqual(t, last.Generation-first.Generation, uint64(rotations))
	assert.Equal(t, wantOID, last.Username)
	assert.Positive(t, gs.AuthAccepted)
	assert.Zero(t, gs.AuthRefused, "%s: the gateway accepted every token (signature, aud, exp, username == oid)", name)
	assert.Zero(t, gs.NoAuth)
	l.checkCounters(t, c, "id", 0)
	noTokenIn(t, w.iss, l.errorTexts())
}

// mi: ManagedIdentityCredential (App Service protocol) selecting the identity each way.
func TestIdentityManagedIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   azidentity.ManagedIDKind
		oid  string
	}{
		{"system-assigned", nil, entratest.DefaultObjectID},
		{"user-assigned by client ID", azidentity.ClientID(userAssigned.ClientID), userAssigned.ObjectID},
		{"user-assigned by object ID", azidentity.ObjectID(userAssigned.ObjectID), userAssigned.ObjectID},
		{"user-assigned by resource ID", azidentity.ResourceID(userAssigned.ResourceID), userAssigned.ObjectID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newIDWorld(t)
			var refreshed atomic.Int64
			p, err := provider.NewManagedIdentity(&azidentity.ManagedIdentityCredentialOptions{ID: tc.id, ClientOptions: w.co}, w.options(&refreshed))
			require.NoError(t, err)
			w.prove("managed identity, "+tc.name, p, &refreshed, tc.oid, nil)
		})
	}
}

func TestIdentityClientSecret(t *testing.T) {
	w := newIDWorld(t)
	var refreshed atomic.Int64
	p, err := provider.NewClientSecret(w.iss.TenantID(), w.iss.AppID(), w.secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true}, w.options(&refreshed))
	require.NoError(t, err)
	w.prove("service principal, secret", p, &refreshed, w.iss.ObjectID(), nil)
	assert.Empty(t, w.iss.AssertionsSeen(), "a secret, no assertion")
}

func TestIdentityClientCertificate(t *testing.T) {
	pw := []byte("pfx-and-pem-password")
	for _, tc := range []struct {
		name     string
		file     func(cc *entratest.ClientCertificate) []byte
		password []byte
	}{
		{"PEM", func(cc *entratest.ClientCertificate) []byte {
			b, err := cc.PEM()
			require.NoError(t, err)
			return b
		}, nil},
		{"PFX", func(cc *entratest.ClientCertificate) []byte {
			b, err := pkcs12.Modern.Encode(cc.Key, cc.Cert, nil, string(pw))
			require.NoError(t, err)
			return b
		}, pw},
		{"encrypted PEM", func(cc *entratest.ClientCertificate) []byte {
			der, err := entratest.EncryptPKCS8(cc.Key, pw)
			require.NoError(t, err)
			return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cc.Cert.Raw}),
				pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})...)
		}, pw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newIDWorld(t)
			path := filepath.Join(t.TempDir(), "sp-cert")
			require.NoError(t, os.WriteFile(path, tc.file(w.cert), 0o600))
			var refreshed atomic.Int64
			p, err := certcred.NewProvider(w.iss.TenantID(), w.iss.AppID(), path, tc.password,
				&azidentity.ClientCertificateCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true}, w.options(&refreshed))
			require.NoError(t, err)
			w.prove("service principal, certificate ("+tc.name+")", p, &refreshed, w.iss.ObjectID(), nil)
			seen := w.iss.AssertionsSeen()
			assert.GreaterOrEqual(t, len(seen), rotations+1, "a fresh assertion signed with the certificate's key for each token")
		})
	}
}

// writeFederatedToken mints a service-account token and writes it as the kubelet does: to a new
// file renamed over the old one.
func (w *idWorld) writeFederatedToken(path string) (jti string) {
	w.t.Helper()
	tok, jti, _, err := w.iss.MintFederated(entratest.FederatedTokenOptions{})
	require.NoError(w.t, err)
	require.NoError(w.t, os.WriteFile(path+".new", []byte(tok), 0o600))
	require.NoError(w.t, os.Rename(path+".new", path))
	return jti
}

// Workload identity as the AKS webhook sets it up (AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE), with the kubelet rotating the token file during the test.
func TestIdentityWorkload(t *testing.T) {
	w := newIDWorld(t)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	firstJTI := w.writeFederatedToken(file)
	t.Setenv("AZURE_CLIENT_ID", w.iss.AppID())
	t.Setenv("AZURE_TENANT_ID", w.iss.TenantID())
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", file)
	var refreshed atomic.Int64
	p, err := provider.NewWorkloadIdentity(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true}, w.options(&refreshed))
	require.NoError(t, err)
	var secondJTI string
	w.prove("workload identity", p, &refreshed, w.iss.ObjectID(), func() { secondJTI = w.writeFederatedToken(file) })

	// azidentity reads the file again only 10 minutes after its last read (Kubernetes tokens live at
	// least an hour and are rotated at 80%, so the one it holds stays valid): across this test's
	// rotations it kept presenting the first token, and the rewrite broke nothing.
	seen := w.iss.AssertionsSeen()
	t.Logf("workload identity: federated token presented %d times before and after the file was rewritten; the rewritten one %d times (azidentity re-reads the file every 10 minutes)",
		seen[firstJTI], seen[secondJTI])
	assert.GreaterOrEqual(t, seen[firstJTI], rotations+1)
	assert.Zero(t, seen[secondJTI])

	// A process started after the rotation (a restarted pod, another replica) reads the new token.
	p2, err := provider.NewWorkloadIdentity(&azidentity.WorkloadIdentityCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true}, nil)
	require.NoError(t, err)
	defer p2.Close()
	_, _, err = p2.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, w.iss.AssertionsSeen()[secondJTI], "a new credential presents the rotated token")
}

// fakeAz puts on PATH an "az" that prints the access token the test keeps fresh in a file (as
// "az account get-access-token -o json" does) and counts its calls in another.
func fakeAz(t *testing.T, dir string) (tokenJSON, calls string) {
	t.Helper()
	tokenJSON, calls = filepath.Join(dir, "token.json"), filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho x >> '" + calls + "'\ncat '" + tokenJSON + "'\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "az"), []byte(script), 0o755))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+"/usr/bin:/bin")
	return tokenJSON, calls
}

// writeAzToken writes what "az account get-access-token" prints, with a freshly minted token.
func writeAzToken(t *testing.T, iss *entratest.Issuer, path string) {
	tok, exp, err := iss.Mint(0)
	if err != nil {
		t.Error(err)
		return
	}
	b, _ := json.Marshal(map[string]any{
		"accessToken": tok, "expiresOn": exp.Local().Format("2006-01-02 15:04:05.000000"), "expires_on": exp.Unix(),
		"subscription": "00000000-0000-0000-0000-000000000001", "tenant": iss.TenantID(), "tokenType": "Bearer",
	})
	if err := os.WriteFile(path+".new", b, 0o600); err == nil {
		_ = os.Rename(path+".new", path)
	}
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

// Azure CLI (a developer's "az login"): AzureCLICredential runs az for every token; a fake az
// prints tokens the test mints.
func TestIdentityAzureCLI(t *testing.T) {
	w := newIDWorld(t)
	tokenJSON, calls := fakeAz(t, t.TempDir())
	writeAzToken(t, w.iss, tokenJSON)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the CLI's own login session, always holding a fresh token
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				writeAzToken(t, w.iss, tokenJSON)
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
	var refreshed atomic.Int64
	cred, err := azidentity.NewAzureCLICredential(nil)
	require.NoError(t, err)
	p, err := provider.New(cred, w.options(&refreshed))
	require.NoError(t, err)
	w.prove("Azure CLI", p, &refreshed, w.iss.ObjectID(), nil)
	t.Logf("Azure CLI: az ran %d times", countLines(calls))
	assert.GreaterOrEqual(t, countLines(calls), rotations+1, "az runs for each token: the CLI credential does not cache")
}

// DefaultAzureCredential picks the credential its environment describes, and never reaches the
// developer tools (a fake az on PATH counts its calls) when an earlier one works.
func TestIdentityDefaultChain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   func(w *idWorld) map[string]string
		oid   func(w *idWorld) string
		check func(t *testing.T, w *idWorld) // which credential worked
	}{
		{
			name: "environment, secret",
			env: func(w *idWorld) map[string]string {
				return map[string]string{"AZURE_TENANT_ID": w.iss.TenantID(), "AZURE_CLIENT_ID": w.iss.AppID(), "AZURE_CLIENT_SECRET": w.secret}
			},
			oid: func(w *idWorld) string { return w.iss.ObjectID() },
			check: func(t *testing.T, w *idWorld) {
				assert.Empty(t, w.iss.AssertionsSeen(), "the secret, not an assertion")
			},
		},
		{
			name: "environment, certificate",
			env: func(w *idWorld) map[string]string {
				b, err := w.cert.PEM()
				require.NoError(w.t, err)
				path := filepath.Join(w.t.TempDir(), "sp.pem")
				require.NoError(w.t, os.WriteFile(path, b, 0o600))
				return map[string]string{"AZURE_TENANT_ID": w.iss.TenantID(), "AZURE_CLIENT_ID": w.iss.AppID(), "AZURE_CLIENT_CERTIFICATE_PATH": path}
			},
			oid:   func(w *idWorld) string { return w.iss.ObjectID() },
			check: func(t *testing.T, w *idWorld) { assert.NotEmpty(t, w.iss.AssertionsSeen(), "certificate assertions") },
		},
		{
			name: "workload identity",
			env: func(w *idWorld) map[string]string {
				file := filepath.Join(w.t.TempDir(), "azure-identity-token")
				w.writeFederatedToken(file)
				return map[string]string{"AZURE_TENANT_ID": w.iss.TenantID(), "AZURE_CLIENT_ID": w.iss.AppID(), "AZURE_FEDERATED_TOKEN_FILE": file}
			},
			oid: func(w *idWorld) string { return w.iss.ObjectID() },
			check: func(t *testing.T, w *idWorld) {
				assert.Len(t, w.iss.AssertionsSeen(), 1, "one federated token, presented for every access token")
			},
		},
		{
			name: "managed identity, user-assigned by AZURE_CLIENT_ID",
			env: func(w *idWorld) map[string]string {
				return map[string]string{"AZURE_CLIENT_ID": userAssigned.ClientID} // IDENTITY_ENDPOINT is set by the world
			},
			oid:   func(*idWorld) string { return userAssigned.ObjectID },
			check: func(t *testing.T, w *idWorld) { assert.Empty(t, w.iss.AssertionsSeen()) },
		},
		{
			name: "managed identity, AZURE_TOKEN_CREDENTIALS=prod",
			env: func(w *idWorld) map[string]string {
				return map[string]string{"AZURE_TOKEN_CREDENTIALS": "prod"}
			},
			oid:   func(*idWorld) string { return entratest.DefaultObjectID },
			check: func(t *testing.T, w *idWorld) { assert.Empty(t, w.iss.AssertionsSeen()) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newIDWorld(t)
			_, calls := fakeAz(t, t.TempDir())
			for k, v := range tc.env(w) {
				t.Setenv(k, v)
			}
			var refreshed atomic.Int64
			p, err := provider.NewDefault(&azidentity.DefaultAzureCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true}, w.options(&refreshed))
			require.NoError(t, err)
			w.prove("DefaultAzureCredential, "+tc.name, p, &refreshed, tc.oid(w), nil)
			tc.check(t, w)
			assert.Zero(t, countLines(calls), "the chain never reached the Azure CLI")
		})
	}
}

// Service Connector's variables: AZURE_REDIS_CLIENTID alone selects that user-assigned managed
// identity (provider.FromEnv, as the Azure samples read them). The credential runs with its
// default options: the managed-identity endpoint is the world's loopback one.
func TestIdentityServiceConnector(t *testing.T) {
	w := newIDWorld(t)
	t.Setenv(envvar.ClientID, userAssigned.ClientID)
	var refreshed atomic.Int64
	p, err := provider.FromEnv(w.options(&refreshed))
	require.NoError(t, err)
	w.prove("Service Connector (AZURE_REDIS_CLIENTID)", p, &refreshed, userAssigned.ObjectID, nil)
}

// rotateTokenFile rewrites file with a fresh federated token of the given lifetime every period,
// as the kubelet does at 80% of a projected token's life, until the test ends.
func (w *idWorld) rotateTokenFile(file string, lifetime, period time.Duration) {
	write := func() {
		tok, _, _, err := w.iss.MintFederated(entratest.FederatedTokenOptions{Lifetime: lifetime})
		if err != nil {
			w.t.Error(err)
			return
		}
		if err := os.WriteFile(file+".new", []byte(tok), 0o600); err == nil {
			_ = os.Rename(file+".new", file)
		}
	}
	write()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				write()
			}
		}
	}()
	w.t.Cleanup(func() { close(stop); wg.Wait() })
}

// Short-lived service-account tokens: WorkloadIdentityCredential keeps the file's content 10
// minutes, so once the token it read expires it presents an expired assertion although the kubelet
// has written a valid one. With rotation at 80% of the life, that happens for tokens under 50
// minutes (AKS's live an hour); here they live 2 s. A ClientAssertionCredential that reads the file
// for each request follows every rotation.
func TestIdentityWorkloadShortTokenFile(t *testing.T) {
	w := newIDWorld(t)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	w.rotateTokenFile(file, 2*time.Second, 200*time.Millisecond) // valid for 2 s, rewritten every 0.2 s

	t.Run("WorkloadIdentityCredential", func(t *testing.T) {
		failed := make(chan error, 1)
		p, err := provider.NewWorkloadIdentity(&azidentity.WorkloadIdentityCredentialOptions{
			ClientID: w.iss.AppID(), TenantID: w.iss.TenantID(), TokenFilePath: file, ClientOptions: w.co, DisableInstanceDiscovery: true,
		}, &provider.Options{
			Retry: retry.Policy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
			OnEvent: func(e provider.Event) {
				if e.Kind == provider.EventRefreshFailed {
					select {
					case failed <- e.Err:
					default:
					}
				}
			},
		})
		require.NoError(t, err)
		defer p.Close()
		start := time.Now()
		_, _, err = p.CredentialsProviderContext(context.Background())
		require.NoError(t, err)
		select {
		case err := <-failed:
			t.Logf("WorkloadIdentityCredential with 2 s service-account tokens rewritten every 0.2 s: the refresh failed %s after the first token: %s",
				time.Since(start).Round(10*time.Millisecond), firstLineWith(err.Error(), "AADSTS"))
			assert.Contains(t, err.Error(), "AADSTS700024", "the assertion it cached had expired")
		case <-time.After(15 * time.Second):
			t.Fatal("no refresh failed: azidentity now reads the token file more often than every 10 minutes; update docs/identities.md's note")
		}
	})

	t.Run("ClientAssertionCredential reading the file", func(t *testing.T) {
		cred, err := azidentity.NewClientAssertionCredential(w.iss.TenantID(), w.iss.AppID(),
			func(context.Context) (string, error) {
				b, err := os.ReadFile(file)
				return string(b), err
			},
			&azidentity.ClientAssertionCredentialOptions{ClientOptions: w.co, DisableInstanceDiscovery: true})
		require.NoError(t, err)
		var refreshed atomic.Int64
		p, err := provider.New(cred, w.options(&refreshed))
		require.NoError(t, err)
		w.t = t // prove reports to this subtest
		w.prove("workload identity, 2 s service-account tokens, file read per request", p, &refreshed, w.iss.ObjectID(), nil)
	})
}

// firstLineWith returns the line of s holding needle.
func firstLineWith(s, needle string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, needle) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

package main

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

// identityCA signs the certificate of every test's Entra authority. TestMain makes the process
// trust it as a system root (SSL_CERT_FILE, read once by crypto/x509), so the CLI talks to the
// emulated authority exactly as it talks to login.microsoftonline.com: no test-only code path.
var identityCA *entratest.TestCA

// trustIdentityCA creates identityCA and points SSL_CERT_FILE at it; it must run before anything
// loads the system roots. It returns the cleanup.
func trustIdentityCA() func() {
	ca, err := entratest.NewTestCA()
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "entraredis-ca")
	if err != nil {
		panic(err)
	}
	f := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f, ca.CertPEM(), 0o600); err != nil {
		panic(err)
	}
	os.Setenv("SSL_CERT_FILE", f)
	identityCA = ca
	return func() { _ = os.RemoveAll(dir) }
}

// A user-assigned managed identity with its own object ID.
var cliUserAssigned = entratest.ManagedIdentity{ClientID: "5b7c9d1e-3f5a-4b7c-9d1e-3f5a7b9c1d2e", ObjectID: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}

// entra serves iss's authority (secret, certificate and federated credential registered) and its
// managed-identity endpoint, and points AZURE_AUTHORITY_HOST at the authority.
func entra(t *testing.T, iss *entratest.Issuer, cc *entratest.ClientCertificate) {
	t.Helper()
	srv, err := identityCA.ServerTLSConfig()
	require.NoError(t, err)
	host, err := iss.ServeAuthority(srv)
	require.NoError(t, err)
	iss.SetClientSecret("s3cret")
	iss.AddCertificate(cc.Cert)
	iss.AddFederatedCredential(entratest.FederatedCredential{})
	iss.AddManagedIdentity(cliUserAssigned)
	iss.SetManagedIdentityEnv(t)
	t.Setenv("AZURE_AUTHORITY_HOST", host)
}

// encryptedPEM writes cc as a PEM file with its key encrypted by password.
func encryptedPEM(t *testing.T, cc *entratest.ClientCertificate, password string) string {
	t.Helper()
	der, err := entratest.EncryptPKCS8(cc.Key, []byte(password))
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "sp.pem")
	require.NoError(t, os.WriteFile(f, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cc.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})...), 0o600))
	return f
}

// federatedFile writes a service-account token as AKS's webhook projects it.
func federatedFile(t *testing.T, iss *entratest.Issuer, o entratest.FederatedTokenOptions) string {
	t.Helper()
	tok, _, _, err := iss.MintFederated(o)
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "azure-identity-token")
	require.NoError(t, os.WriteFile(f, []byte(tok), 0o600))
	return f
}

// azPrinting is a fake az that prints what "az account get-access-token -o json" prints.
func azPrinting(t *testing.T, iss *entratest.Issuer) string {
	t.Helper()
	tok, exp, err := iss.Mint(time.Minute)
	require.NoError(t, err)
	b, err := json.Marshal(map[string]any{"accessToken": tok, "expiresOn": exp.Local().Format("2006-01-02 15:04:05.000000"),
		"expires_on": exp.Unix(), "tenant": iss.TenantID(), "tokenType": "Bearer"})
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "token.json")
	require.NoError(t, os.WriteFile(f, b, 0o600))
	return "exec /bin/cat '" + f + "'\n" // PATH holds only the fake az
}

// TestCheckEveryCredential runs check end to end with each --credential against entratest (its
// HTTPS authority found through AZURE_AUTHORITY_HOST and trusted as a system root, its
// managed-identity endpoint, a fake az) and a TLS gateway: the success, and the main failure of
// each with its advice.
func TestCheckEveryCredential(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	const pw = "pem-password"
	tests := []struct {
		name  string
		kind  string
		setup func(t *testing.T, iss *entratest.Issuer, cc *entratest.ClientCertificate) []string // extra flags
		oid   string                                                                              // passes with this oid
		hint  string                                                                              // or fails the token step with this advice
		usage string                                                                              // or stops before it, saying this
	}{
		{name: "secret", kind: "secret", oid: entratest.DefaultObjectID, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_REDIS_CLIENTSECRET", "s3cret")
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID()}
		}},
		{name: "secret, wrong", kind: "secret", hint: hintBadSecret, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_CLIENT_SECRET", "expired-secret")
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID()}
		}},
		{name: "secret, unknown application", kind: "secret", hint: hintAppNotFound, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_REDIS_CLIENTSECRET", "s3cret")
			return []string{"--client-id", "11111111-2222-3333-4444-555555555555", "--tenant-id", iss.TenantID()}
		}},
		{name: "cert (encrypted PEM)", kind: "cert", oid: entratest.DefaultObjectID, setup: func(t *testing.T, iss *entratest.Issuer, cc *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", pw)
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID(), "--cert", encryptedPEM(t, cc, pw)}
		}},
		{name: "cert, not registered", kind: "cert", hint: hintCertRejected, setup: func(t *testing.T, iss *entratest.Issuer, cc *entratest.ClientCertificate) []string {
			other, err := entratest.NewClientCertificate(cc.Key, time.Time{}, time.Time{})
			require.NoError(t, err)
			t.Setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", pw)
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID(), "--cert", encryptedPEM(t, other, pw)}
		}},
		{name: "workload", kind: "workload", oid: entratest.DefaultObjectID, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_FEDERATED_TOKEN_FILE", federatedFile(t, iss, entratest.FederatedTokenOptions{}))
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID()}
		}},
		{name: "workload, another service account", kind: "workload", hint: hintFederation, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_FEDERATED_TOKEN_FILE", federatedFile(t, iss, entratest.FederatedTokenOptions{Subject: "system:serviceaccount:default:other"}))
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID()}
		}},
		{name: "workload, expired token file", kind: "workload", hint: hintAssertionTime, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_FEDERATED_TOKEN_FILE", federatedFile(t, iss, entratest.FederatedTokenOptions{Lifetime: -time.Minute}))
			return []string{"--client-id", iss.AppID(), "--tenant-id", iss.TenantID()}
		}},
		{name: "workload, not set up", kind: "workload", usage: hintWorkload, setup: func(*testing.T, *entratest.Issuer, *entratest.ClientCertificate) []string {
			return nil
		}},
		{name: "mi, user-assigned", kind: "mi", oid: cliUserAssigned.ObjectID, setup: func(*testing.T, *entratest.Issuer, *entratest.ClientCertificate) []string {
			return []string{"--client-id", cliUserAssigned.ClientID}
		}},
		{name: "mi, object ID given as client ID", kind: "mi", hint: hintMINotFound, setup: func(*testing.T, *entratest.Issuer, *entratest.ClientCertificate) []string {
			return []string{"--client-id", cliUserAssigned.ObjectID}
		}},
		{name: "default (environment, secret)", kind: "default", oid: entratest.DefaultObjectID, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_TENANT_ID", iss.TenantID())
			t.Setenv("AZURE_CLIENT_ID", iss.AppID())
			t.Setenv("AZURE_CLIENT_SECRET", "s3cret")
			return nil
		}},
		{name: "default, developer tools only and az not logged in", kind: "default", hint: hintCLINotLoggedIn, setup: func(t *testing.T, _ *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			t.Setenv("AZURE_TOKEN_CREDENTIALS", "dev")
			fakeAz(t, "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
			return nil
		}},
		{name: "cli", kind: "cli", oid: entratest.DefaultObjectID, setup: func(t *testing.T, iss *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			fakeAz(t, azPrinting(t, iss))
			return nil
		}},
		{name: "cli, not logged in", kind: "cli", hint: hintCLINotLoggedIn, setup: func(t *testing.T, _ *entratest.Issuer, _ *entratest.ClientCertificate) []string {
			fakeAz(t, "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAzureEnv(t)
			for _, v := range []string{"AZURE_TOKEN_CREDENTIALS", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD"} {
				t.Setenv(v, "")
				_ = os.Unsetenv(v) // azidentity tells unset from empty for AZURE_TOKEN_CREDENTIALS
			}
			iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
			cc, err := entratest.NewClientCertificate(testKey(t), time.Time{}, time.Time{})
			require.NoError(t, err)
			entra(t, iss, cc)
			gw, caFile := tlsGateway(t, iss, "")
			args := append(checkArgs(gw, caFile), tt.setup(t, iss, cc)...)
			args[6] = tt.kind // --credential
			start := time.Now()
			code, out, errOut := cli(t, "", args...)
			t.Logf("check --credential %s (%s):\n%s%s", tt.kind, time.Since(start).Round(time.Millisecond), out, errOut)
			if tt.usage != "" {
				assert.Equal(t, exitUsage, code)
				assert.Contains(t, errOut, tt.usage)
				return
			}
			if tt.hint == "" {
				require.Equal(t, exitOK, code)
				assert.Contains(t, out, "oid="+tt.oid)
				assert.Contains(t, out, "check passed")
				assert.Zero(t, gw.Stats().AuthRefused)
				if tt.kind != "mi" && tt.kind != "cli" && tt.kind != "default" {
					assert.Contains(t, out, "AZURE_AUTHORITY_HOST, instance discovery off")
				}
				return
			}
			assert.Equal(t, exitFailed, code)
			assert.Regexp(t, `(?m)^  FAIL  token `, out)
			assert.Contains(t, out, "fix: "+tt.hint)
			assert.Contains(t, out, "check failed")
			assert.NotContains(t, out, "s3cret")
			assert.False(t, strings.Contains(out, pw), "no password in the report")
			assert.Less(t, time.Since(start), 10*time.Second)
		})
	}
}

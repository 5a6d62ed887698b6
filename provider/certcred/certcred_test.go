package certcred

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/entraredis/entraredis/entratest"
)

// certAuthority serves an entratest authority over TLS with cc registered and returns credential
// options that reach it, and only loopback.
func certAuthority(t *testing.T, cc *entratest.ClientCertificate) (*entratest.Issuer, *azidentity.ClientCertificateCredentialOptions) {
	t.Helper()
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Minute, Key: cc.Key})
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	iss.AddCertificate(cc.Cert)
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srv, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	host, err := iss.ServeAuthority(srv)
	require.NoError(t, err)
	var d net.Dialer
	tr := &http.Transport{TLSClientConfig: ca.ClientTLSConfig(), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h, _, _ := net.SplitHostPort(addr); net.ParseIP(h) == nil || !net.ParseIP(h).IsLoopback() {
			t.Errorf("dial to %s: tests stay on loopback", addr)
			return nil, net.UnknownNetworkError("not loopback")
		}
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return iss, &azidentity.ClientCertificateCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: host},
			Transport: &http.Client{Transport: tr},
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		DisableInstanceDiscovery: true,
	}
}

// TestClientCertificateFormats reads each kind of certificate file a user may have, drives the real
// ClientCertificateCredential with it against entratest's token endpoint (which checks the
// assertion's signature against the registered certificate), and records which of them
// azidentity.ParseCertificates alone could read.
func TestClientCertificateFormats(t *testing.T) {
	cc, err := entratest.NewClientCertificate(nil, time.Time{}, time.Time{})
	require.NoError(t, err)
	iss, credOpts := certAuthority(t, cc)
	pw := []byte("correct horse")

	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cc.Cert.Raw})
	pkcs8DER, err := x509.MarshalPKCS8PrivateKey(cc.Key)
	require.NoError(t, err)
	encPKCS8, err := entratest.EncryptPKCS8(cc.Key, pw) // PBES2, PBKDF2-HMAC-SHA-256, AES-256-CBC
	require.NoError(t, err)
	//nolint:staticcheck // OpenSSL's legacy PEM encryption, as old files have it
	legacyBlock, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(cc.Key), pw, x509.PEMCipherAES256)
	require.NoError(t, err)
	pfx := func(enc *pkcs12.Encoder, password string) []byte {
		b, err := enc.Encode(cc.Key, cc.Cert, nil, password)
		require.NoError(t, err)
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name         string
		data         []byte
		password     []byte
		wantErr      error  // errors.Is
		wantText     string // part of the error
		byAzidentity bool   // azidentity.ParseCertificates reads it too
	}{
		{name: "PEM, PKCS#8 key", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER})), byAzidentity: true},
		{name: "PEM, key first", data: cat(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER}), certPEM), byAzidentity: true},
		{name: "PEM, PKCS#1 key", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(cc.Key)})), byAzidentity: true},
		{name: "PEM, encrypted PKCS#8 key", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: encPKCS8})), password: pw},
		{name: "PEM, legacy encrypted key", data: cat(certPEM, pem.EncodeToMemory(legacyBlock)), password: pw},
		{name: "PFX, legacy (3DES, SHA-1)", data: pfx(pkcs12.LegacyDES, string(pw)), password: pw, byAzidentity: true},
		{name: "PFX, modern (AES-256, SHA-256 MAC)", data: pfx(pkcs12.Modern, string(pw)), password: pw},
		{name: "PFX without password", data: pfx(pkcs12.Passwordless, "")},

		{name: "encrypted PEM, no password", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: encPKCS8})), wantErr: ErrPassword},
		{name: "encrypted PEM, wrong password", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: encPKCS8})), password: []byte("nope"), wantErr: ErrPassword},
		{name: "legacy encrypted PEM, no password", data: cat(certPEM, pem.EncodeToMemory(legacyBlock)), wantErr: ErrPassword},
		{name: "PFX, wrong password", data: pfx(pkcs12.Modern, string(pw)), password: []byte("nope"), wantErr: ErrPassword},
		{name: "certificate without key", data: certPEM, wantText: "no private key"},
		{name: "key without certificate", data: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER}), wantText: "no CERTIFICATE"},
		{name: "two keys", data: cat(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8DER})), wantText: "more than one private key"},
		{name: "garbage", data: []byte("not a certificate"), wantText: "neither PEM nor a readable PFX"},
	}
	dir := t.TempDir()
	readByAzidentity := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "sp"+string(rune('a'+i)))
			require.NoError(t, os.WriteFile(path, tt.data, 0o600))
			_, _, azErr := azidentity.ParseCertificates(tt.data, tt.password)
			p, err := NewProvider(iss.TenantID(), iss.AppID(), path, tt.password, credOpts, nil)
			if tt.wantErr != nil || tt.wantText != "" {
				require.Error(t, err)
				if tt.wantErr != nil {
					assert.ErrorIs(t, err, tt.wantErr)
				}
				assert.Contains(t, err.Error(), tt.wantText)
				if len(tt.password) > 0 {
					assert.NotContains(t, err.Error(), string(tt.password), "no password in errors")
				}
				return
			}
			require.NoError(t, err)
			defer p.Close()
			assert.Equal(t, tt.byAzidentity, azErr == nil, "azidentity.ParseCertificates alone: %v", azErr)
			if azErr == nil {
				readByAzidentity++
			}
			before := len(iss.AssertionsSeen())
			user, _, err := p.CredentialsProviderContext(context.Background())
			require.NoError(t, err)
			assert.Equal(t, iss.ObjectID(), user)
			assert.Len(t, iss.AssertionsSeen(), before+1, "one assertion signed with the file's key, checked against the registered certificate")
		})
	}
	t.Logf("certificate files: %d formats read and accepted by the token endpoint, of which azidentity.ParseCertificates alone reads %d; %d malformed or locked files refused with a clear error",
		8, readByAzidentity, len(tests)-8)
}

func TestNewProvider(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	good := filepath.Join(dir, "sp.pem")
	require.NoError(t, os.WriteFile(good, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), 0o600))
	bad := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))

	p, err := NewProvider("tid", "cid", good, nil, nil, nil)
	require.NoError(t, err)
	require.NoError(t, p.Close())

	_, err = NewProvider("tid", "cid", bad, nil, nil, nil)
	assert.ErrorContains(t, err, "no usable certificate")
	_, err = NewProvider("tid", "cid", filepath.Join(dir, "missing.pem"), nil, nil, nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

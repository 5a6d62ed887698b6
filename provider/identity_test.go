package provider

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/envvar"
)

func TestFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    any    // the credential's type
		wantErr string // part of the error
	}{
		{"nothing: DefaultAzureCredential", nil, &azidentity.DefaultAzureCredential{}, ""},
		{"client ID alone: user-assigned managed identity", map[string]string{envvar.ClientID: "cid"}, &azidentity.ManagedIdentityCredential{}, ""},
		{"service principal", map[string]string{envvar.ClientID: "cid", envvar.TenantID: "tid", envvar.ClientSecret: "s3cret"}, &azidentity.ClientSecretCredential{}, ""},
		{"secret without tenant", map[string]string{envvar.ClientID: "cid", envvar.ClientSecret: "s3cret"}, nil, envvar.TenantID + " is empty"},
		{"secret without client ID", map[string]string{envvar.TenantID: "tid", envvar.ClientSecret: "s3cret"}, nil, envvar.ClientID + " is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := fromEnv(func(k string) string { return tc.env[k] }, nil)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.NotContains(t, err.Error(), "s3cret")
				return
			}
			require.NoError(t, err)
			defer p.Close()
			assert.IsType(t, tc.want, p.cred)
		})
	}
}

func TestNewClientCertificate(t *testing.T) {
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

	p, err := NewClientCertificate("tid", "cid", good, nil, nil, nil)
	require.NoError(t, err)
	assert.IsType(t, &azidentity.ClientCertificateCredential{}, p.cred)
	require.NoError(t, p.Close())

	_, err = NewClientCertificate("tid", "cid", bad, nil, nil, nil)
	assert.ErrorContains(t, err, "no usable certificate")
	_, err = NewClientCertificate("tid", "cid", filepath.Join(dir, "missing.pem"), nil, nil, nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestConstructorsDoNoIO(t *testing.T) {
	for name, mk := range map[string]func() (*Provider, error){
		"default": func() (*Provider, error) { return NewDefault(nil, nil) },
		"managed": func() (*Provider, error) { return NewManagedIdentity(nil, nil) },
		"secret":  func() (*Provider, error) { return NewClientSecret("tid", "cid", "s", nil, nil) },
		"workload": func() (*Provider, error) {
			return NewWorkloadIdentity(&azidentity.WorkloadIdentityCredentialOptions{ClientID: "c", TenantID: "t", TokenFilePath: "/nonexistent"}, nil)
		},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := mk()
			require.NoError(t, err)
			require.NoError(t, p.Close())
		})
	}
	_, err := New(nil, nil)
	assert.ErrorContains(t, err, "nil credential")
}

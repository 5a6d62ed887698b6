package provider

import (
	"testing"

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

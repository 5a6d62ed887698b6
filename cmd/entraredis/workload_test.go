package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// check --credential workload outside a pod set up for workload identity names the variables to set
// (azidentity's own text speaks of options a command-line user has no way to set).
func TestCheckWorkloadIdentityHint(t *testing.T) {
	missingFile := filepath.Join(t.TempDir(), "no-such-token")
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"nothing set", nil},
		{"no token file", map[string]string{"AZURE_CLIENT_ID": "0e3c5f7a-9b1d-4f2e-8a6c-5d4b3a291807", "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47"}},
		{"no client ID", map[string]string{"AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47", "AZURE_FEDERATED_TOKEN_FILE": missingFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_REDIS_CLIENTID", "AZURE_REDIS_TENANTID", "AZURE_REDIS_CLIENTSECRET"} {
				t.Setenv(k, tc.env[k])
				if tc.env[k] == "" {
					require.NoError(t, os.Unsetenv(k))
				}
			}
			code, _, errOut := cli(t, "", "check", "--host", "127.0.0.1", "--port", "1", "--credential", "workload")
			t.Logf("stderr: %s", errOut)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, errOut, "fix: workload identity is not set up here")
			for _, v := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"} {
				assert.Contains(t, errOut, v)
			}
		})
	}
}

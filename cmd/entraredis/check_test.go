package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

// checkArgs are the flags of a check against gw, trusting caFile, with the managed identity.
func checkArgs(gw *entratest.Gateway, caFile string, extra ...string) []string {
	return append([]string{"check", "--host", "127.0.0.1", "--port", strconv.Itoa(gw.Port()),
		"--credential", "mi", "--ca-file", caFile, "--timeout", "5s"}, extra...)
}

// clearAzureEnv keeps the developer's own Azure settings out of the tests.
func clearAzureEnv(t *testing.T) {
	for _, v := range []string{"AZURE_REDIS_HOST", "AZURE_REDIS_PORT", "AZURE_REDIS_CLIENTID", "AZURE_REDIS_TENANTID",
		"AZURE_REDIS_CLIENTSECRET", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"} {
		t.Setenv(v, "")
	}
}

func TestCheckPasses(t *testing.T) {
	clearAzureEnv(t)
	iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t) // the real azidentity.ManagedIdentityCredential, on loopback
	gw, caFile := tlsGateway(t, iss, "")

	code, out, errOut := cli(t, "", checkArgs(gw, caFile)...)
	t.Log(out, errOut)
	require.Equal(t, exitOK, code)
	for _, step := range []string{"token", "connect", "auth", "ping", "data", "client"} {
		assert.Regexp(t, `(?m)^  ok    `+step+` `, out)
	}
	assert.Contains(t, out, "oid="+iss.ObjectID())
	assert.Contains(t, out, "aud=https://redis.azure.com")
	assert.Contains(t, out, "TLS 1.3")
	assert.Contains(t, out, "check passed")
	assert.Empty(t, errOut)
	assert.GreaterOrEqual(t, gw.Stats().AuthAccepted, int64(2), "the raw AUTH and the go-redis client's")
	assert.Zero(t, gw.Stats().AuthRefused)
}

func TestCheckUsage(t *testing.T) {
	clearAzureEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no host", []string{"check"}, "no host"},
		{"secret without tenant", []string{"check", "--host", "127.0.0.1", "--credential", "secret", "--client-id", "x"}, "needs a tenant ID"},
		{"secret without secret", []string{"check", "--host", "127.0.0.1", "--credential", "secret", "--client-id", "x", "--tenant-id", "y"}, "AZURE_REDIS_CLIENTSECRET"},
		{"cert without file", []string{"check", "--host", "127.0.0.1", "--credential", "cert", "--client-id", "x", "--tenant-id", "y"}, "needs a certificate file"},
		{"unknown credential", []string{"check", "--host", "127.0.0.1", "--credential", "magic"}, `unknown --credential "magic"`},
		{"bad port", []string{"check", "--host", "127.0.0.1:http"}, "not a number"},
		{"missing CA file", []string{"check", "--host", "127.0.0.1", "--ca-file", "/nonexistent/ca.pem"}, "--ca-file"},
		{"argument", []string{"check", "extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, "", tt.args...)
			assert.Equal(t, exitUsage, code, out)
			assert.Contains(t, errOut, tt.want)
		})
	}
}

func TestResolveAddr(t *testing.T) {
	tests := []struct {
		host    string
		port    int
		envPort string
		want    string
	}{
		{"contoso.redis.cache.windows.net", 0, "", "contoso.redis.cache.windows.net:6380"},
		{"contoso.westeurope.redis.azure.net", 0, "", "contoso.westeurope.redis.azure.net:10000"},
		{"contoso.westeurope.redis.azure.net.", 0, "", "contoso.westeurope.redis.azure.net.:10000"},
		{"contoso.redis.cache.windows.net:6390", 0, "", "contoso.redis.cache.windows.net:6390"},
		{"contoso.redis.cache.windows.net", 0, "6400", "contoso.redis.cache.windows.net:6400"},
		{"127.0.0.1", 12345, "6400", "127.0.0.1:12345"},
		{"::1", 7000, "", "[::1]:7000"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cc := checkConfig{host: tt.host, port: tt.port}
			require.NoError(t, cc.resolveAddr(tt.envPort))
			assert.Equal(t, tt.want, cc.addr())
		})
	}
	cc := checkConfig{host: "h", port: 70000}
	assert.ErrorContains(t, cc.resolveAddr(""), "out of range")
	cc = checkConfig{host: "h"}
	assert.ErrorContains(t, cc.resolveAddr("x"), "AZURE_REDIS_PORT")
	_ = strings.TrimSpace
}

package main

import (
	"crypto/rand"
	"crypto/rsa"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/testutil"
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

// With only Service Connector's variables (a user-assigned identity) and no flags but the test CA.
func TestCheckServiceConnectorEnv(t *testing.T) {
	clearAzureEnv(t)
	iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)
	gw, caFile := tlsGateway(t, iss, "")
	t.Setenv("AZURE_REDIS_HOST", gw.Addr())
	t.Setenv("AZURE_REDIS_CLIENTID", entratest.DefaultAppID) // the identity's client ID

	code, out, _ := cli(t, "", "check", "--ca-file", caFile)
	t.Log(out)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "as managed identity (user-assigned, client ID "+entratest.DefaultAppID+")")
	assert.Contains(t, out, "check passed")
}

func TestCheckInsecureSkipVerify(t *testing.T) {
	clearAzureEnv(t)
	iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
	iss.SetManagedIdentityEnv(t)
	gw, _ := tlsGateway(t, iss, "")

	code, out, _ := cli(t, "", "check", "--host", gw.Addr(), "--credential", "mi", "--insecure-skip-verify")
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "warning: --insecure-skip-verify")
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

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// silentListener accepts connections and never answers: a TLS handshake against it times out.
func silentListener(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

// fakeAz puts an "az" on PATH that fails as the real one does when nobody is logged in; with
// script empty, PATH holds no az at all.
func fakeAz(t *testing.T, script string) {
	t.Helper()
	dir := t.TempDir()
	if script != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "az"), []byte("#!/bin/sh\n"+script), 0o755))
	}
	t.Setenv("PATH", dir)
}

// TestCheckFailureHints reproduces each failure check diagnoses and asserts its advice.
func TestCheckFailureHints(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) []string // returns the arguments
		step  string
		hint  string
	}{
		{
			name: "NOPERM: identity without a data access policy",
			setup: func(t *testing.T) []string {
				// A real redis-server whose default user (the gateway's upstream) may not SET:
				// the data access policy of the identity allows reads only.
				rs := entratest.StartRedis(t, &entratest.RedisOptions{Args: []string{"user default on nopass ~* &* +@all -set"}})
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				gw, ca := tlsGateway(t, iss, rs.Addr())
				return checkArgs(gw, ca)
			},
			step: "data", hint: hintNoPerm,
		},
		{
			name: "WRONGPASS: username is not the token's oid",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				gw, ca := tlsGateway(t, iss, "")
				return checkArgs(gw, ca, "--username", entratest.DefaultAppID) // the client ID: a classic
			},
			step: "auth", hint: "the username " + entratest.DefaultAppID + " is not the token's oid " + entratest.DefaultObjectID,
		},
		{
			name: "WRONGPASS: the identity is not a Redis user on the cache (no access policy)",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				gw, ca := tlsGateway(t, iss, "")
				gw.SetUsers("11111111-2222-3333-4444-555555555555") // someone else
				return checkArgs(gw, ca)
			},
			step: "auth", hint: "add the identity (object ID " + entratest.DefaultObjectID + ") as a Redis user on the cache",
		},
		{
			name: "WRONGPASS: token of another identity provider",
			setup: func(t *testing.T) []string {
				trusted := newIssuer(t, entratest.IssuerOptions{})
				k, err := rsa.GenerateKey(rand.Reader, 1024) // small: only its difference matters
				require.NoError(t, err)
				other := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute, Key: k, ObjectID: "0badf00d-0000-4000-8000-000000000001"})
				other.SetManagedIdentityEnv(t)
				gw, ca := tlsGateway(t, trusted, "")
				return checkArgs(gw, ca)
			},
			step: "auth", hint: "add the identity (object ID 0badf00d-0000-4000-8000-000000000001) as a Redis user on the cache",
		},
		{
			name: "TLS: certificate of an unknown CA",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				gw, _ := tlsGateway(t, iss, "")
				otherCA, err := entratest.NewTestCA()
				require.NoError(t, err)
				return checkArgs(gw, writeCA(t, otherCA))
			},
			step: "connect", hint: hintUnknownCA,
		},
		{
			name: "TLS: plain-text port",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				plain := entratest.StartGateway(t, iss, miniredis.RunT(t).Addr(), nil)
				_, ca := tlsGateway(t, iss, "")
				return checkArgs(plain, ca)
			},
			step: "connect", hint: hintNotTLS,
		},
		{
			name: "timeout: a listener that never answers",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				return []string{"check", "--host", "127.0.0.1", "--port", strconv.Itoa(silentListener(t)),
					"--credential", "mi", "--timeout", "300ms"}
			},
			step: "connect", hint: hintTLSTimeout,
		},
		{
			name: "refused: nothing listens on the port",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				return []string{"check", "--host", "127.0.0.1", "--port", strconv.Itoa(closedPort(t)), "--credential", "mi"}
			},
			step: "connect", hint: hintRefused,
		},
		{
			name: "IMDS unreachable: not on Azure",
			setup: func(t *testing.T) []string {
				t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:"+strconv.Itoa(closedPort(t))+"/msi/token")
				t.Setenv("IDENTITY_HEADER", "secret")
				return []string{"check", "--host", "127.0.0.1", "--port", "6380", "--credential", "mi", "--timeout", "1s"}
			},
			step: "token", hint: hintIMDS,
		},
		{
			name: "user-assigned identity not found",
			setup: func(t *testing.T) []string {
				iss := newIssuer(t, entratest.IssuerOptions{Lifetime: time.Minute})
				iss.SetManagedIdentityEnv(t)
				return []string{"check", "--host", "127.0.0.1", "--port", "6380", "--credential", "mi",
					"--client-id", "11111111-2222-3333-4444-555555555555"}
			},
			step: "token", hint: hintMINotFound,
		},
		{
			name: "Azure CLI not logged in",
			setup: func(t *testing.T) []string {
				fakeAz(t, "echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n")
				return []string{"check", "--host", "127.0.0.1", "--port", "6380", "--credential", "cli"}
			},
			step: "token", hint: hintCLINotLoggedIn,
		},
		{
			name: "Azure CLI not installed",
			setup: func(t *testing.T) []string {
				fakeAz(t, "")
				return []string{"check", "--host", "127.0.0.1", "--port", "6380", "--credential", "cli"}
			},
			step: "token", hint: hintCLIMissing,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearAzureEnv(t)
			args := tt.setup(t)
			start := time.Now()
			code, out, errOut := cli(t, "", args...)
			t.Log(out, errOut)
			assert.Equal(t, exitFailed, code)
			assert.Regexp(t, `(?m)^  FAIL  `+tt.step+` `, out)
			assert.Contains(t, out, "fix: "+tt.hint)
			assert.Contains(t, out, "check failed")
			assert.Less(t, time.Since(start), 10*time.Second)
		})
	}
}

func TestCheckWatchAcrossRefreshes(t *testing.T) {
	testutil.Slow(t)
	clearAzureEnv(t)
	backend := miniredis.RunT(t).Addr()
	base := runtime.NumGoroutine()
	iss := newIssuer(t, entratest.IssuerOptions{Lifetime: 2 * time.Second})
	iss.SetManagedIdentityEnv(t)
	gw, caFile := tlsGateway(t, iss, backend)

	code, out, _ := cli(t, "", checkArgs(gw, caFile, "--watch", "3500ms", "--every", "100ms")...)
	t.Log(out)
	require.Equal(t, exitOK, code)
	assert.Contains(t, out, "token refreshed")
	assert.Contains(t, out, "re-AUTH ok")
	m := regexp.MustCompile(`(?m)^  ok    watch     \S+: (\d+) rounds, 0 failed; (\d+) token refreshes, (\d+) re-AUTHs \(0 failed\)`).FindStringSubmatch(out)
	require.NotNil(t, m, "watch summary")
	rounds, _ := strconv.Atoi(m[1])
	refreshes, _ := strconv.Atoi(m[2])
	reauths, _ := strconv.Atoi(m[3])
	assert.GreaterOrEqual(t, rounds, 20)
	assert.GreaterOrEqual(t, refreshes, 1)
	assert.GreaterOrEqual(t, reauths, 1)
	assert.Zero(t, gw.Stats().AuthRefused)
	assert.NotContains(t, out, "FAIL")
	// Connections come from the hook's stats: every one the gateway accepted is check's raw
	// connection, the client's first, or a reconnection.
	r := regexp.MustCompile(`(?m)^  ok    watch .*, (\d+) reconnections$`).FindStringSubmatch(out)
	require.NotNil(t, r, "reconnections in the watch summary")
	reconnections, _ := strconv.Atoi(r[1])
	t.Logf("%d rounds, %d refreshes, %d re-AUTHs, %d reconnections; gateway: %d connections", rounds, refreshes, reauths, reconnections, gw.Stats().Connections)
	assert.Equal(t, gw.Stats().Connections, int64(reconnections)+2)
	// What is left once the servers are gone is the command's.
	require.NoError(t, gw.Close())
	require.NoError(t, iss.Close())
	testutil.WaitGoroutines(t, base)
}

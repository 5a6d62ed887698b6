package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
)

// jwtShape matches anything that looks like a JWT: no output of the CLI may contain one.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`)

// cli runs the program in-process.
func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return cliCtx(t, context.Background(), stdin, args...)
}

func cliCtx(t *testing.T, ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	stdout, stderr = out.String(), errOut.String()
	// Never a token, whatever happened; the match is not printed, only whether there was one.
	assert.False(t, jwtShape.MatchString(stdout), "stdout holds something shaped like a JWT")
	assert.False(t, jwtShape.MatchString(stderr), "stderr holds something shaped like a JWT")
	return code, stdout, stderr
}

// Generating an RSA key takes long under -race: tests share one.
var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
)

func testKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		key, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	return key
}

func newIssuer(t *testing.T, o entratest.IssuerOptions) *entratest.Issuer {
	t.Helper()
	if o.Key == nil {
		o.Key = testKey(t)
	}
	iss, err := entratest.NewIssuer(&o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

// tlsGateway is an entratest gateway serving TLS with a fresh test CA, in front of backend
// (miniredis when empty). It returns the gateway and the CA's PEM file.
func tlsGateway(t *testing.T, iss *entratest.Issuer, backend string) (*entratest.Gateway, string) {
	t.Helper()
	if backend == "" {
		backend = miniredis.RunT(t).Addr()
	}
	ca, err := entratest.NewTestCA()
	require.NoError(t, err)
	srv, err := ca.ServerTLSConfig()
	require.NoError(t, err)
	gw := entratest.StartGateway(t, iss, backend, &entratest.GatewayOptions{TLS: srv})
	return gw, writeCA(t, ca)
}

func writeCA(t *testing.T, ca *entratest.TestCA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(f, ca.CertPEM(), 0o600))
	return f
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "Usage:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"help", []string{"help"}, exitOK, "entraredis demo"},
		{"bad flag", []string{"demo", "--nope"}, exitUsage, "flag provided but not defined"},
		{"check -h", []string{"check", "-h"}, exitOK, "--watch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, "", tt.args...)
			assert.Equal(t, tt.code, code)
			assert.Contains(t, strings.ReplaceAll(out+errOut, "  -", "  --"), tt.want)
		})
	}
}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // as main does
	cleanup := trustIdentityCA()   // before anything loads the system roots
	code := m.Run()
	cleanup()
	os.Exit(code)
}

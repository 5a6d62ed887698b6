package entraredis

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/internal/envvar"
)

// setEnv sets Service Connector's variables (and azidentity's, unset) to env's values for the test;
// a variable missing from env is unset.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{envHost, envPort, envvar.ClientID, envvar.TenantID, envvar.ClientSecret,
		"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE"} {
		t.Setenv(k, env[k]) // restored after the test
		if env[k] == "" {
			require.NoError(t, os.Unsetenv(k)) // azidentity tells unset from empty
		}
	}
}

func TestEnvAddr(t *testing.T) {
	for _, tc := range []struct {
		in, port, want string
	}{
		{"mycache.redis.cache.windows.net", "", "mycache.redis.cache.windows.net:6380"},
		{" mycache.redis.cache.windows.net\n", "", "mycache.redis.cache.windows.net:6380"},
		{"mycache.redis.cache.chinacloudapi.cn", "", "mycache.redis.cache.chinacloudapi.cn:6380"},
		{"mycache.westeurope.redis.azure.net", "", "mycache.westeurope.redis.azure.net:10000"},
		{"MyCache.WestEurope.Redis.Azure.Net.", "", "MyCache.WestEurope.Redis.Azure.Net.:10000"},
		{"mycache.eastus.redisenterprise.cache.azure.net", "", "mycache.eastus.redisenterprise.cache.azure.net:10000"},
		{"mycache.westeurope.redis.azure.net:8500", "", "mycache.westeurope.redis.azure.net:8500"},
		{"127.0.0.1:6379", "", "127.0.0.1:6379"},
		{"::1", "", "[::1]:6380"},
		{"[::1]:7000", "", "[::1]:7000"},
		{"localhost", "", "localhost:6380"},
		{"mycache.redis.cache.windows.net", "6379", "mycache.redis.cache.windows.net:6379"},
		{"mycache.westeurope.redis.azure.net", " 8500 ", "mycache.westeurope.redis.azure.net:8500"},
		{"mycache.redis.cache.windows.net:6380", "6379", "mycache.redis.cache.windows.net:6380"}, // the host's own port wins
		{"::1", "7000", "[::1]:7000"},
	} {
		t.Run(tc.in+","+tc.port, func(t *testing.T) {
			got, err := envAddr(tc.in, tc.port)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestNewClientFromEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		opt     *redis.Options
		isErr   error
		mention string
	}{
		{"no host", nil, nil, ErrMissingEnv, "AZURE_REDIS_HOST"},
		{"blank host", map[string]string{envHost: "  "}, nil, ErrMissingEnv, "AZURE_REDIS_HOST"},
		{"a URL, not a host", map[string]string{envHost: "rediss://c.redis.cache.windows.net:6380"}, nil, nil, "not a host name"},
		{"port without host", map[string]string{envHost: ":6380"}, nil, nil, "needs a host name"},
		{"port not a number", map[string]string{envHost: "c.redis.cache.windows.net", envPort: "tls"}, nil, nil, "AZURE_REDIS_PORT"},
		{"port out of range", map[string]string{envHost: "c.redis.cache.windows.net", envPort: "70000"}, nil, nil, "AZURE_REDIS_PORT"},
		{"Addr set too", map[string]string{envHost: "c.redis.cache.windows.net"}, &redis.Options{Addr: "other:6380"}, nil, "opt.Addr"},
		{"secret without tenant", map[string]string{envHost: "c.redis.cache.windows.net", envvar.ClientSecret: "hunter2-secret", envvar.ClientID: "id"}, nil, nil, "AZURE_REDIS_TENANTID"},
		{"secret without client ID", map[string]string{envHost: "c.redis.cache.windows.net", envvar.ClientSecret: "hunter2-secret", envvar.TenantID: "t"}, nil, nil, "AZURE_REDIS_CLIENTID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			rdb, p, err := NewClientFromEnv(tc.opt, nil)
			require.Error(t, err)
			assert.Nil(t, rdb)
			assert.Nil(t, p)
			if tc.isErr != nil {
				assert.ErrorIs(t, err, tc.isErr)
			}
			assert.Contains(t, err.Error(), tc.mention)
			assert.NotContains(t, err.Error(), "hunter2", "the secret is not echoed")
		})
	}
}

// An Azure host name gets the right port and TLS; nothing is dialled.
func TestNewClientFromEnvAzureHosts(t *testing.T) {
	for _, tc := range []struct{ host, port, addr string }{
		{"c.redis.cache.windows.net", "", "c.redis.cache.windows.net:6380"},
		{"c.westeurope.redis.azure.net", "", "c.westeurope.redis.azure.net:10000"},
		{"c.westeurope.redis.azure.net", "8501", "c.westeurope.redis.azure.net:8501"}, // AZURE_REDIS_PORT
	} {
		t.Run(tc.addr, func(t *testing.T) {
			env := map[string]string{envHost: tc.host, envPort: tc.port, envvar.ClientID: entratest.DefaultAppID}
			dialer := func(context.Context, string, string) (net.Conn, error) {
				t.Errorf("dialled %s: nothing may leave loopback", tc.addr)
				return nil, errors.New("no dialling in this test")
			}
			setEnv(t, env)
			rdb, p, err := NewClientFromEnv(&redis.Options{Dialer: dialer}, nil)
			require.NoError(t, err)
			defer p.Close()
			defer rdb.Close()
			assert.Equal(t, tc.addr, rdb.Options().Addr)
			require.NotNil(t, rdb.Options().TLSConfig)
			assert.Equal(t, tc.host, rdb.Options().TLSConfig.ServerName)
		})
	}
}

// Service Connector's variables, the real managed-identity credential against entratest's endpoint,
// and entratest's gateway in front of a real redis-server: the client works, system- and
// user-assigned.
func TestNewClientFromEnvManagedIdentity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		clientID string
	}{
		{"system-assigned (DefaultAzureCredential)", ""},
		{"user-assigned", entratest.DefaultAppID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: time.Minute})
			require.NoError(t, err)
			defer iss.Close()
			iss.SetManagedIdentityEnv(t)
			srv := entratest.StartRedis(t, nil)
			gw := entratest.StartGateway(t, iss, srv.Addr(), nil)
			setEnv(t, map[string]string{envHost: gw.Addr(), envvar.ClientID: tc.clientID})

			rdb, p, err := NewClientFromEnv(nil, nil)
			require.NoError(t, err)
			defer p.Close()
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, rdb.Set(ctx, "from-env", "ok", 0).Err())
			assert.Equal(t, "ok", rdb.Get(ctx, "from-env").Val())
			info, ok := p.Token()
			require.True(t, ok)
			assert.Equal(t, iss.ObjectID(), info.Username)
			st := gw.Stats()
			t.Logf("issuer served %d tokens over HTTP; gateway accepted %d AUTHs, refused %d", iss.Stats().Served, st.AuthAccepted, st.AuthRefused)
			assert.Positive(t, iss.Stats().Served)
			assert.Positive(t, st.AuthAccepted)
			assert.Zero(t, st.AuthRefused)
		})
	}
}

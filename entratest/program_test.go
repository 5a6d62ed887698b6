package entratest

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

// The helpers for a plain program need no testing.TB: a redis-server that Close stops and cleans
// up after, and the managed-identity environment set and restored in the process.
func TestPlainProgramHelpers(t *testing.T) {
	srv, err := RunRedis(nil)
	require.NoError(t, err)
	require.NoError(t, Ping(srv.Addr(), 5*time.Second))
	dir := srv.Dir()
	require.DirExists(t, dir)
	require.NoError(t, srv.Close())
	assert.NoDirExists(t, dir, "Close removes the directory RunRedis made")
	_, err = net.DialTimeout("tcp", srv.Addr(), time.Second)
	assert.Error(t, err, "the server is stopped")

	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/before") // restored by t after the test
	t.Setenv("MSI_ENDPOINT", "http://127.0.0.1:1/msi")
	require.NoError(t, os.Unsetenv("IDENTITY_HEADER"))
	iss, err := NewIssuer(&IssuerOptions{Lifetime: time.Minute})
	require.NoError(t, err)
	defer iss.Close()
	restore, err := iss.ExportManagedIdentityEnv()
	require.NoError(t, err)
	_, msiSet := os.LookupEnv("MSI_ENDPOINT")
	assert.False(t, msiSet, "other sources unset")
	cred, err := azidentity.NewManagedIdentityCredential(nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{Scope}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), iss.Stats().Served)

	restore()
	assert.Equal(t, "http://127.0.0.1:1/before", os.Getenv("IDENTITY_ENDPOINT"))
	assert.Equal(t, "http://127.0.0.1:1/msi", os.Getenv("MSI_ENDPOINT"))
	_, hdrSet := os.LookupEnv("IDENTITY_HEADER")
	assert.False(t, hdrSet)
}

func TestRunRedisReportsFailure(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := RunRedis(nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "install it")
}

func TestRunCluster(t *testing.T) {
	testutil.Slow(t)
	iss, err := NewIssuer(&IssuerOptions{Lifetime: time.Minute})
	require.NoError(t, err)
	defer iss.Close()
	c, err := RunCluster(iss, &ClusterOptions{Masters: 3})
	require.NoError(t, err)
	tok, _, err := iss.Mint(time.Minute)
	require.NoError(t, err)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Username: iss.ObjectID(), Password: tok})
	ctx := context.Background()
	for i := range 20 {
		require.NoError(t, rdb.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err())
	}
	require.NoError(t, rdb.Close())
	var dirs []string
	for _, n := range c.Nodes() {
		dirs = append(dirs, n.Dir())
	}
	assert.Positive(t, c.Stats().AuthAccepted)
	require.NoError(t, c.Close())
	for _, d := range dirs {
		assert.NoDirExists(t, d)
	}
}

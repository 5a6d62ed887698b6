package entratest

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func requireRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip(redisMissing)
	}
}

func TestStartRedis(t *testing.T) {
	requireRedisServer(t)
	s := StartRedis(t, &RedisOptions{Args: []string{"appendonly yes", "appendfsync always"}})
	require.True(t, strings.HasPrefix(s.Addr(), "127.0.0.1:"))
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	save, err := c.ConfigGet(ctx, "save").Result()
	require.NoError(t, err)
	assert.Equal(t, "", save["save"], "snapshots are off by default")

	s.Restart(t)
	v, err := c.Get(ctx, "k").Result()
	require.NoError(t, err, "the client reconnects to the same port")
	assert.Equal(t, "v", v, "append-only data survives a restart")

	s.Kill()
	require.Error(t, Ping(s.Addr(), time.Second))
	s.Start(t)
	require.NoError(t, Ping(s.Addr(), time.Second))
	s.Stop()
	s.Stop() // idempotent
	require.Error(t, Ping(s.Addr(), time.Second))
}

func TestStartRedisSaveOverride(t *testing.T) {
	requireRedisServer(t)
	s := StartRedis(t, &RedisOptions{Args: []string{"save 60 1"}})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	save, err := c.ConfigGet(context.Background(), "save").Result()
	require.NoError(t, err)
	assert.Equal(t, "60 1", save["save"])
}

// fatalTB records Fatal and ends the goroutine like testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestStartRedisFailures(t *testing.T) {
	tests := []struct {
		name string
		path string
		opts *RedisOptions
		want string
	}{
		{name: "missing binary", path: t.TempDir(), want: "apt-get install redis-server"},
		{name: "bad directive", opts: &RedisOptions{Args: []string{"no-such-directive 1"}}, want: "exited at start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			} else {
				requireRedisServer(t)
			}
			f := &fatalTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				StartRedis(f, tt.opts)
			}()
			<-done
			f.mu.Lock()
			defer f.mu.Unlock()
			assert.Contains(t, f.msg, tt.want)
		})
	}
}

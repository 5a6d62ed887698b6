// Package e2e is the end-to-end proof of entraredis, written as a user would use the library
// (public API only): the real azidentity managed-identity credential against entratest's
// emulated identity endpoint, the provider, entraredis clients, and entratest's gateway enforcing
// Entra ID's rules in front of a real redis-server. Tokens live a few seconds, so an hour of Azure
// happens in each test.
//
// Run it with: go test -race -count=1 -v ./entratest/e2e/
// The soak (30 s of rotation under load instead of 15 s): ENTRAREDIS_SOAK=1 go test ...
package e2e_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/testutil"
	"github.com/entraredis/entraredis/provider"
	"github.com/entraredis/entraredis/retry"
)

// TestMain skips the whole suite under -short: every test here runs token rotations for seconds
// (go test -short ./... is the edit loop; make test runs this).
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped under -short (seconds of token rotations per test); make test runs it")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rig is one test's world: issuer (with its managed-identity endpoint in the environment),
// provider over the real azidentity credential, hook, and optionally a redis-server behind a
// gateway.
type rig struct {
	t   *testing.T
	iss *entratest.Issuer
	srv *entratest.RedisServer
	gw  *entratest.Gateway
	p   *provider.Provider
	h   *hook.Hook

	refreshed atomic.Int64 // EventRefreshed count
	mu        sync.Mutex
	waiters   []chan struct{} // closed at the next refresh
}

type rigOptions struct {
	lifetime  time.Duration
	redisArgs []string
	noServer  bool // the test brings its own backend (cluster)
	gateway   *entratest.GatewayOptions
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if _, err := os.Stat("/proc"); err == nil {
		testutil.CheckGoroutines(t) // registered first: runs after every other cleanup
	}
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: o.lifetime})
	require.NoError(t, err)
	t.Cleanup(func() { _ = iss.Close() })
	// Lifetimes stay under 5 minutes: azidentity's process-wide managed-identity cache would
	// otherwise hand one test's token to the next (see Issuer.ServeManagedIdentity).
	require.Less(t, o.lifetime, 5*time.Minute)
	iss.SetManagedIdentityEnv(t)
	r := &rig{t: t, iss: iss}

	// A user's configuration for short-lived tokens: the SDK's own retries kept short (its default,
	// 3 retries at 0.8 s, 2.4 s, 5.6 s, would outlast a 3 s token), and the provider's backoff capped.
	p, err := provider.NewManagedIdentity(&azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}},
	}, &provider.Options{
		Retry: retry.Policy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		OnEvent: func(e provider.Event) {
			if e.Kind != provider.EventRefreshed {
				return
			}
			r.refreshed.Add(1)
			r.mu.Lock()
			for _, w := range r.waiters {
				close(w)
			}
			r.waiters = nil
			r.mu.Unlock()
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	r.p = p
	r.h = hook.New(p, nil)
	t.Cleanup(func() { _ = r.h.Close() })

	if !o.noServer {
		r.srv = entratest.StartRedis(t, &entratest.RedisOptions{Args: o.redisArgs})
		r.gw = entratest.StartGateway(t, iss, r.srv.Addr(), o.gateway)
	}
	return r
}

// client returns an entraredis client of the rig's gateway, closed at cleanup (before the
// provider and the gateway).
func (r *rig) client(opt *redis.Options) *redis.Client {
	if opt == nil {
		opt = &redis.Options{}
	}
	if opt.Addr == "" {
		opt.Addr = r.gw.Addr()
	}
	c := entraredis.NewClient(r.h, opt)
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// nextRefresh returns a channel closed at the provider's next refresh.
func (r *rig) nextRefresh() <-chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.waiters = append(r.waiters, ch)
	r.mu.Unlock()
	return ch
}

func (r *rig) waitRefresh(timeout time.Duration) {
	r.t.Helper()
	select {
	case <-r.nextRefresh():
	case <-time.After(timeout):
		r.t.Fatalf("no token refresh within %s", timeout)
	}
}

// load is a set of workers that INCR their own counter (prefix:i) until Stop.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	// Per worker, written by that worker only, read after Stop.
	acked  []int64
	failed []int64
	oks    [][]time.Time // times of acknowledged INCRs
	fails  [][]time.Time // times of failed INCRs

	mu   sync.Mutex
	errs map[string]int // distinct error texts
}

// startIncr starts n workers; each command is bounded by opTimeout and followed by pause.
func startIncr(c redis.Cmdable, prefix string, n int, opTimeout, pause time.Duration) *load {
	l := &load{
		stop: make(chan struct{}), acked: make([]int64, n), failed: make([]int64, n),
		oks: make([][]time.Time, n), fails: make([][]time.Time, n), errs: map[string]int{},
	}
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			key := fmt.Sprintf("%s:%d", prefix, i)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				err := c.Incr(ctx, key).Err()
				cancel()
				now := time.Now()
				if err != nil {
					l.failed[i]++
					l.fails[i] = append(l.fails[i], now)
					l.mu.Lock()
					l.errs[err.Error()]++
					l.mu.Unlock()
				} else {
					l.acked[i]++
					l.oks[i] = append(l.oks[i], now)
				}
				if pause > 0 {
					select {
					case <-l.stop:
						return
					case <-time.After(pause):
					}
				}
			}
		}()
	}
	return l
}

// Stop ends the workers and waits for them.
func (l *load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) total() (acked, failed int64) {
	for i := range l.acked {
		acked += l.acked[i]
		failed += l.failed[i]
	}
	return acked, failed
}

func (l *load) errorTexts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for e, n := range l.errs {
		out = append(out, fmt.Sprintf("%dx %s", n, e))
	}
	return out
}

// checkCounters compares each worker's counter with its acknowledged INCRs: none may be lost
// (counter >= acknowledged). It returns how many ran without being acknowledged as a success
// (failed ones that ran, and ones go-redis sent again after their connection broke), and fails
// the test when a worker has more of them than its failures plus extraRuns.
func (l *load) checkCounters(t *testing.T, c redis.Cmdable, prefix string, extraRuns int64) (unacked int64) {
	t.Helper()
	ctx := context.Background()
	for i := range l.acked {
		got, err := c.Get(ctx, fmt.Sprintf("%s:%d", prefix, i)).Int64()
		if errors.Is(err, redis.Nil) {
			got, err = 0, nil
		}
		require.NoError(t, err)
		assert.GreaterOrEqual(t, got, l.acked[i], "worker %d: an acknowledged INCR was lost", i)
		assert.LessOrEqual(t, got, l.acked[i]+l.failed[i]+extraRuns, "worker %d: more INCRs ran than were sent", i)
		unacked += max(got-l.acked[i], 0)
	}
	return unacked
}

// noTokenIn fails if any text holds a part of a token the issuer could have minted: every token's
// header segment is the same for one issuer, and every payload starts with the same claims.
func noTokenIn(t *testing.T, iss *entratest.Issuer, texts []string) {
	t.Helper()
	tok, _, err := iss.Mint(time.Minute)
	require.NoError(t, err)
	header := strings.SplitN(tok, ".", 2)[0]
	for _, s := range texts {
		assert.False(t, strings.Contains(s, header), "an error holds a token")
		assert.False(t, strings.Contains(s, "eyJ"), "an error holds something base64-encoded JSON")
	}
}

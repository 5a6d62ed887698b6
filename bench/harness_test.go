package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/entraredis/entraredis/entratest"
)

var (
	keyOnce sync.Once
	key     *rsa.PrivateKey
	keyErr  error
)

// newIssuer returns an entratest issuer of tokens living life. One RSA key serves every issuer of
// the binary: generating one takes longer than some benchmarks.
func newIssuer(tb testing.TB, life time.Duration) *entratest.Issuer {
	tb.Helper()
	keyOnce.Do(func() { key, keyErr = rsa.GenerateKey(rand.Reader, 2048) })
	if keyErr != nil {
		tb.Fatal(keyErr)
	}
	iss, err := entratest.NewIssuer(&entratest.IssuerOptions{Lifetime: life, Key: key})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = iss.Close() })
	return iss
}

// shortCred is the identity endpoint of a scenario: it hands out cred's tokens but tells the
// client they expire life after it answers. entratest mints exp claims in whole seconds, too coarse
// for hundreds of rotations a minute; the server still accepts each token until its exp claim,
// later than the client believes, never sooner. It counts the calls and, when record is set, the
// time each call arrived (before any work, so a slow mint does not move it).
type shortCred struct {
	cred   azcore.TokenCredential
	life   time.Duration
	record bool
	start  time.Time

	calls atomic.Int64
	pool  chan string // tokens minted before the scenario, so that minting costs no CPU during it

	mu    sync.Mutex
	times []time.Duration // arrival of each call, since start
}

// premint fills the pool with n tokens of the issuer (lifetime an hour: the client's view is life).
func (c *shortCred) premint(tb testing.TB, iss *entratest.Issuer, n int) {
	tb.Helper()
	c.pool = make(chan string, n)
	for range n {
		tok, _, err := iss.Mint(time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		c.pool <- tok
	}
}

func (c *shortCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	now := time.Now()
	c.calls.Add(1)
	if c.record {
		c.mu.Lock()
		c.times = append(c.times, now.Sub(c.start))
		c.mu.Unlock()
	}
	select {
	case tok := <-c.pool:
		return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(c.life)}, nil
	default:
	}
	at, err := c.cred.GetToken(ctx, o)
	if err != nil {
		return at, err
	}
	// From the answer, not the request: a mint slowed by a busy CPU must not hand out a token
	// already near its end.
	if short := time.Now().Add(c.life); short.Before(at.ExpiresOn) {
		at.ExpiresOn = short
	}
	return at, nil
}

// arrivals returns the recorded arrival times, sorted.
func (c *shortCred) arrivals() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := slices.Clone(c.times)
	slices.Sort(ts)
	return ts
}

// maxInWindow returns the largest number of sorted times ts within any window of length w.
func maxInWindow(ts []time.Duration, w time.Duration) int {
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi]-ts[lo] >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// waitFor polls cond every tick until it holds or d has passed, and reports whether it held.
func waitFor(d, tick time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(tick)
	}
	return true
}

// goroutines returns the lowest goroutine count seen over a few samples: timers firing and
// connections closing make short-lived goroutines that are not a leak.
func goroutines() int {
	n := runtime.NumGoroutine()
	for range 10 {
		time.Sleep(10 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// client is one side of a side-by-side benchmark: "plain" go-redis or "entraredis".
type client[T any] struct {
	name string
	v    T
}

// ordered returns cs in the order to run them: as given, or reversed when BENCH_REVERSE=1. make
// bench alternates the two across runs, so that neither side always runs first (on a cold CPU
// cache, before the other's garbage is collected, ...).
func ordered[T any](cs []client[T]) []client[T] {
	if os.Getenv("BENCH_REVERSE") == "1" {
		cs = slices.Clone(cs)
		slices.Reverse(cs)
	}
	return cs
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

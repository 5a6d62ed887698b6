package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/entratest"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/internal/acltest"
	"github.com/entraredis/entraredis/provider"
)

// BenchmarkCommands: GET and SET of a 100-byte value, from 1 and 8 goroutines, through plain
// go-redis authenticated with a static ACL password (client=plain) and through
// entraredis.NewClient (client=entraredis: provider, hook and connection guard) on the same
// redis-server. Both clients have go-redis's default options but for the credentials. Targets:
// entraredis's throughput at least 0.98 of plain's, and the same allocs/op.
func BenchmarkCommands(b *testing.B) {
	s := newSetup(b, time.Hour)
	ctx := context.Background()
	val := strings.Repeat("v", 100)
	clients := []client[*redis.Client]{
		{"plain", s.plain(nil)},
		{"entraredis", s.entraredis(nil)},
	}
	for _, c := range clients {
		if err := c.v.Set(ctx, "bench:get", val, 0).Err(); err != nil {
			b.Fatal(err)
		}
		warm(b, c.v, 8)
	}
	ops := []struct {
		name string
		do   func(c *redis.Client) error
	}{
		{"get", func(c *redis.Client) error { return c.Get(ctx, "bench:get").Err() }},
		{"set", func(c *redis.Client) error { return c.Set(ctx, "bench:set", val, 0).Err() }},
	}
	for _, op := range ops {
		for _, g := range []int{1, 8} {
			for _, c := range ordered(clients) {
				b.Run(fmt.Sprintf("op=%s/g=%d/client=%s", op.name, g, c.name), func(b *testing.B) {
					b.ReportAllocs()
					concurrently(b, g, func() error { return op.do(c.v) })
				})
			}
		}
	}
}

// BenchmarkInterleaved measures the same as BenchmarkCommands (and a pipeline of 10 SETs of 16 KiB
// values), with the two clients taking turns in chunks of 200 operations (40 pipelines) within one
// benchmark (the first client of each pair alternating),
// so that a change in the machine's load (other processes on a shared machine) hits both alike.
// Each client has its own g long-lived goroutines. It
// reports each client's ns/op and CPU ns/op, and the throughput ratio entraredis / plain: the
// figure held to the >= 0.98 target.
func BenchmarkInterleaved(b *testing.B) {
	s := newSetup(b, time.Hour)
	ctx := context.Background()
	val := strings.Repeat("v", 100)
	plain, entra := s.plain(nil), s.entraredis(nil)
	for _, c := range []*redis.Client{plain, entra} {
		if err := c.Set(ctx, "bench:get", val, 0).Err(); err != nil {
			b.Fatal(err)
		}
		warm(b, c, 8)
	}
	big := strings.Repeat("v", 16<<10)
	ops := []struct {
		name string
		do   func(c *redis.Client) error
	}{
		{"get", func(c *redis.Client) error { return c.Get(ctx, "bench:get").Err() }},
		{"set", func(c *redis.Client) error { return c.Set(ctx, "bench:set", val, 0).Err() }},
		// A pipeline of 10 SETs of 16 KiB: the guard follows 160 KiB a request, written in pieces.
		{"pipeline", func(c *redis.Client) error {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := range 10 {
					p.Set(ctx, pipelineKeys[i], big, 0)
				}
				return nil
			})
			return err
		}},
	}
	for _, op := range ops {
		for _, g := range []int{1, 8} {
			chunk := 200
			if op.name == "pipeline" {
				chunk = 40 // 6.4 MB a turn
			}
			b.Run(fmt.Sprintf("op=%s/g=%d", op.name, g), func(b *testing.B) {
				var wall, cpu [2]time.Duration
				clients := [2]*workers{
					startWorkers(g, func() error { return op.do(plain) }),
					startWorkers(g, func() error { return op.do(entra) }),
				}
				defer clients[0].stop()
				defer clients[1].stop()
				n := 0
				for i := 0; n < b.N; i++ {
					for j := range 2 {
						k := (i + j) % 2 // plain first on even turns, entraredis first on odd ones
						w0, c0 := time.Now(), cpuTime()
						if err := clients[k].run(chunk); err != nil {
							b.Fatal(err)
						}
						wall[k] += time.Since(w0)
						cpu[k] += cpuTime() - c0
					}
					n += chunk
				}
				per := func(d time.Duration) float64 { return float64(d) / float64(n) }
				b.ReportMetric(per(wall[0]), "plain-ns/op")
				b.ReportMetric(per(wall[1]), "entraredis-ns/op")
				b.ReportMetric(per(cpu[0]), "plain-cpu-ns/op")
				b.ReportMetric(per(cpu[1]), "entraredis-cpu-ns/op")
				b.ReportMetric(float64(wall[0])/float64(wall[1]), "throughput-ratio")
				b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "cpu-ratio")
			})
		}
	}
}

// workers are g long-lived goroutines running op on demand. Goroutines that live as long as the
// benchmark, as an application's do: a goroutine started per chunk would pay for growing its stack
// on its first command, a cost that depends on how deep the call path is (the hook's frames tip
// go-redis's SET over the initial 8 KiB) and that a long-lived goroutine pays once.
type workers struct {
	g    int
	work chan int
	wg   sync.WaitGroup
	mu   sync.Mutex
	err  error
}

func startWorkers(g int, op func() error) *workers {
	w := &workers{g: g, work: make(chan int)}
	for range g {
		go func() {
			for n := range w.work {
				for range n {
					if err := op(); err != nil {
						w.mu.Lock()
						w.err = err
						w.mu.Unlock()
						break
					}
				}
				w.wg.Done()
			}
		}()
	}
	return w
}

// run runs op n times in total, shared among the workers, and returns the first error.
func (w *workers) run(n int) error {
	w.wg.Add(w.g)
	for i := range w.g {
		share := n / w.g
		if i < n%w.g {
			share++
		}
		w.work <- share
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *workers) stop() { close(w.work) }

// concurrently runs op b.N times in total from g goroutines. Besides ns/op it reports the
// process's CPU time per op (user and system, all threads): on a shared machine wall time moves
// with the neighbours' load, CPU time much less, and it is the client's cost alone (redis-server is
// another process).
func concurrently(b *testing.B, g int, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	n := int64(b.N)
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op") }()
	b.ResetTimer()
	for range g {
		wg.Go(func() {
			for next.Add(1) <= n {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// warm opens n connections in c's pool, so that no benchmark pays for dialling.
func warm(tb testing.TB, c *redis.Client, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			// A blocking command holds its connection, so n of them need n connections.
			errs <- c.Do(context.Background(), "blpop", "bench:warm", 0.05).Err()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && err != redis.Nil {
			tb.Fatal(err)
		}
	}
}

// setup is a redis-server that accepts both sides: the tokens of an acltest.Env (each token is the
// password of an ACL user named by its oid claim, removed when it expires, as Azure does) and a
// static password for plain go-redis, of an ACL user with the same rights.
type setup struct {
	tb     testing.TB
	addr   string
	env    *acltest.Env // nil for an open setup
	static string
}

// newSetup starts the server; the Env's tokens live life.
func newSetup(tb testing.TB, life time.Duration) *setup {
	tb.Helper()
	s := &setup{tb: tb, env: acltest.Start(tb, &acltest.Options{Lifetime: life})}
	s.addr = s.env.Addr()
	// The static password is a token too, so that both sides send AUTH arguments of one size.
	tok, _, err := s.env.Issuer().Mint(time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	s.static = tok
	if err := s.env.Admin(0).Do(context.Background(), "acl", "setuser", "plain", "on", ">"+tok, "~*", "&*", "+@all").Err(); err != nil {
		tb.Fatal(err)
	}
	return s
}

// plain returns a plain go-redis client with the static password; o holds other options.
func (s *setup) plain(o *redis.Options) *redis.Client {
	opt := s.options(o)
	opt.Username, opt.Password = "plain", s.static
	c := redis.NewClient(opt)
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// entraredis returns entraredis.NewClient on a provider of the Env's tokens, all defaults.
func (s *setup) entraredis(o *redis.Options) *redis.Client {
	c, _, _ := s.entraredisWith(nil, nil, nil, o)
	return c
}

// entraredisWith returns entraredis's client, its provider and its hook, with options: a nil cred
// is the Env itself.
func (s *setup) entraredisWith(cred azcore.TokenCredential, po *provider.Options, ho *hook.Options, o *redis.Options) (*redis.Client, *provider.Provider, *hook.Hook) {
	if cred == nil {
		cred = s.env
	}
	p, err := provider.New(cred, po)
	if err != nil {
		s.tb.Fatal(err)
	}
	h := hook.New(p, ho)
	c := entraredis.NewClient(h, s.options(o))
	s.tb.Cleanup(func() {
		_ = c.Close()
		_ = h.Close()
		_ = p.Close()
	})
	return c, p, h
}

func (s *setup) options(o *redis.Options) *redis.Options {
	var opt redis.Options
	if o != nil {
		opt = *o
	}
	opt.Addr = s.addr
	return &opt
}

// newOpenSetup starts a redis-server whose ACL user named by iss's oid claim accepts any password:
// every token iss mints is accepted, with no state kept per token. The memory scenario uses it:
// acltest.Env keeps every token it mints (Env.Tokens), about 1.1 KB per rotation that would be
// counted as the client's.
func newOpenSetup(tb testing.TB, iss *entratest.Issuer) *setup {
	tb.Helper()
	var b [16]byte
	_, _ = rand.Read(b[:])
	srv := entratest.StartRedis(tb, &entratest.RedisOptions{Args: []string{
		"user default on >" + hex.EncodeToString(b[:]) + " ~* &* +@all", // nobody gets in as default
		"user " + iss.ObjectID() + " on nopass ~* &* +@all",
	}})
	return &setup{tb: tb, addr: srv.Addr()}
}

var pipelineKeys = func() (ks [10]string) {
	for i := range ks {
		ks[i] = fmt.Sprintf("bench:pipeline:%d", i)
	}
	return ks
}()

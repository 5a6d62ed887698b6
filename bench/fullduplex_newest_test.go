//go:build goredis_newest

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkFullDuplex: GET and INCR through go-redis's full-duplex autopipeliner
// (AutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: true}), go-redis v9.24, built
// with -tags goredis_newest), from 1, 16 and 64 goroutines, for four clients on the same
// redis-server in one run:
//
//   - plain: go-redis with a static ACL password;
//   - hooked: the same with a no-op hook (what any ProcessHook costs on go-redis's full-duplex
//     path, where a hooked command runs its hook chain on a goroutine of its own);
//   - entraredis: entraredis.NewClient with the full-duplex autopipeliner in its options
//     (Options.AutoPipelineOptions), which it builds without a hook (the dialer and the guard
//     carry it), next to plain;
//   - entraredis-hooked: entraredis.NewClient made for the usual path, its autopipeliner made
//     full-duplex afterwards, with the hook installed: entraredis's own cost on go-redis's hooked
//     path, next to hooked.
//
// One iteration is a turn: each client runs one chunk of operations from its own g long-lived
// goroutines, the order of the clients changing from turn to turn (rotated, then reversed), so
// that a change in the machine's load hits all alike. Run it with -benchtime Nx (N turns). It
// reports each client's ns/op and, per pair, the throughput ratio over the whole run
// (a-vs-b-ratio: a's throughput / b's) and the median of the per-turn ratios (a-vs-b-turn-p50);
// and each client's socket reads and writes per command (counted on the raw connection, under
// entraredis's guard).
//
// With BENCH_PPROF_LABELS=1 every goroutine of a client (its workers, the engine's writer, reader
// and hook hosts) carries the pprof label client=<name>: a -cpuprofile of the run then splits by
// client (go tool pprof -tagfocus client=entraredis).
func BenchmarkFullDuplex(b *testing.B) {
	s := newSetup(b, time.Hour)
	ctx := context.Background()
	names := [...]string{"plain", "hooked", "entraredis", "entraredis-hooked"}
	const nc = len(names)
	var counts [nc]*ioCounts
	var aps [nc]*redis.AutoPipeliner
	labels := os.Getenv("BENCH_PPROF_LABELS") == "1"
	for i, name := range names {
		counts[i] = &ioCounts{}
		o := &redis.Options{Dialer: countingDialer(counts[i])}
		fd := &redis.AutoPipelineOptions{FullDuplex: true}
		var c *redis.Client
		switch name {
		case "plain":
			c = s.plain(o)
		case "hooked":
			c = s.plain(o)
			c.AddHook(noopHook{})
		case "entraredis":
			o.AutoPipelineOptions, fd = fd, nil
			c = s.entraredis(o)
		default:
			c = s.entraredis(o)
		}
		start := func(context.Context) {
			ap, err := c.AutoPipelineWithOptions(fd)
			if err == nil && !ap.Config().FullDuplex {
				b.Fatal("not full-duplex")
			}
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = ap.Close() })
			if err := ap.Set(ctx, "bench:fd:get", "v", 0).Err(); err != nil {
				b.Fatal(err)
			}
			aps[i] = ap
		}
		if labels {
			pprof.Do(ctx, pprof.Labels("client", name), start)
		} else {
			start(ctx)
		}
	}
	ops := []struct {
		name string
		do   func(ap *redis.AutoPipeliner, key string) error
	}{
		{"get", func(ap *redis.AutoPipeliner, _ string) error { return ap.Get(ctx, "bench:fd:get").Err() }},
		{"incr", func(ap *redis.AutoPipeliner, key string) error { return ap.Incr(ctx, key).Err() }},
	}
	for _, op := range ops {
		for _, g := range []int{1, 16, 64} {
			// About 50-100 ms a chunk on 2 cores: long enough for the batching to settle, short
			// enough for many turns.
			chunk := map[int]int{1: 2000, 16: 8000, 64: 16000}[g]
			b.Run(fmt.Sprintf("op=%s/g=%d", op.name, g), func(b *testing.B) {
				var ws [nc]*workers
				for i := range names {
					key := "bench:fd:incr:" + names[i]
					run := func(context.Context) { ws[i] = startWorkers(g, func() error { return op.do(aps[i], key) }) }
					if labels {
						pprof.Do(ctx, pprof.Labels("client", names[i]), run)
					} else {
						run(ctx)
					}
					defer ws[i].stop()
					if err := ws[i].run(g * 20); err != nil { // warm: the session held, stacks grown
						b.Fatal(err)
					}
				}
				var io0 [nc]ioSnapshot
				for i := range names {
					io0[i] = counts[i].snapshot()
				}
				var wall [nc]time.Duration
				var turns [nc][]time.Duration
				b.ResetTimer()
				for t := 0; t < b.N; t++ {
					for j := range nc {
						k := (t/2 + j) % nc // rotated every other turn ...
						if t%2 == 1 {
							k = (t/2 + nc - 1 - j) % nc // ... and reversed on odd ones
						}
						t0 := time.Now()
						if err := ws[k].run(chunk); err != nil {
							b.Fatal(err)
						}
						d := time.Since(t0)
						wall[k] += d
						turns[k] = append(turns[k], d)
					}
				}
				b.StopTimer()
				n := float64(b.N * chunk)
				for i, name := range names {
					b.ReportMetric(float64(wall[i])/n, name+"-ns/op")
					d := counts[i].snapshot().minus(io0[i])
					b.ReportMetric(float64(d.reads)/n, name+"-reads/op")
					b.ReportMetric(float64(d.writes)/n, name+"-writes/op")
				}
				// a's throughput / b's = b's time / a's time.
				for _, p := range [][2]int{{2, 0}, {3, 1}, {1, 0}, {3, 0}} {
					a, c := p[0], p[1]
					tag := names[a] + "-vs-" + names[c]
					b.ReportMetric(float64(wall[c])/float64(wall[a]), tag+"-ratio")
					rs := make([]float64, len(turns[a]))
					for t := range rs {
						rs[t] = float64(turns[c][t]) / float64(turns[a][t])
					}
					b.ReportMetric(medianOf(rs), tag+"-turn-p50")
				}
			})
		}
	}
}

func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	vs = slices.Clone(vs)
	sort.Float64s(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// noopHook is a hook that does nothing but call the next one: what go-redis's hooked path costs
// on its own.
type noopHook struct{}

func (noopHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (noopHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return next(ctx, cmd) }
}
func (noopHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return next(ctx, cmds) }
}

// ioCounts counts the Read and Write calls on a client's raw connections (each one system call
// on plain TCP, but for reads that find data buffered in the runtime: none do in Go).
type ioCounts struct{ r, w atomic.Int64 }

type ioSnapshot struct{ reads, writes int64 }

func (c *ioCounts) snapshot() ioSnapshot { return ioSnapshot{c.r.Load(), c.w.Load()} }
func (s ioSnapshot) minus(o ioSnapshot) ioSnapshot {
	return ioSnapshot{s.reads - o.reads, s.writes - o.writes}
}

// countingDialer dials TCP as go-redis does and counts the Read and Write calls on the
// connections. It keeps syscall.Conn, so that go-redis's health check of a pooled connection
// still runs.
func countingDialer(c *ioCounts) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 5 * time.Minute}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: nc, c: c}
		if sc, ok := nc.(syscall.Conn); ok {
			return countedSysConn{cc, sc}, nil
		}
		return cc, nil
	}
}

type countedConn struct {
	net.Conn
	c *ioCounts
}

func (cc *countedConn) Read(b []byte) (int, error) {
	cc.c.r.Add(1)
	return cc.Conn.Read(b)
}

func (cc *countedConn) Write(b []byte) (int, error) {
	cc.c.w.Add(1)
	return cc.Conn.Write(b)
}

type countedSysConn struct {
	*countedConn
	sc syscall.Conn
}

func (c countedSysConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/entraredis/entraredis"
	"github.com/entraredis/entraredis/hook"
	"github.com/entraredis/entraredis/provider"
)

const (
	blockLife      = 3 * time.Second  // entraredis's token lifetime at the gateway
	blockRun       = 10 * time.Second // producing time per client: about 4 rotations
	blockListCons  = 4                // consumers in BLPOP 0
	blockStreamCon = 2                // consumers in XREAD BLOCK 0, from $
)

// BenchmarkBlockingConsumers: 4 consumers wait in BLPOP 0 on one list and 2 in XREAD BLOCK 0 on
// one stream (starting from $, then from the last ID each has seen), while a producer RPUSHes and
// XADDs its clock at a steady rate for 10 s, through entratest's TLS gateway in front of a
// redis-server. It asserts that the consumers get every element (list: popped == pushed; stream:
// each consumer reads every entry), that no command fails and, for entraredis, that the gateway
// closed no connection at its token's expiry; it reports the push-to-pop latency (p50, p99, max) of each
// kind, the gateway's closes at expiry, the hook's blocking splits per rotation, and errors.
//
// client=entraredis is entraredis.NewClient with 3 s tokens: the blocks would outlast the token,
// so the hook sends them as shorter blocks and renews between them (hook.Stats.BlockingSplits).
// client=plain is plain go-redis with a static token valid for an hour on the same gateway: what
// the same consumers cost when tokens do not expire.
//
// The producer pushes every 10 ms (every=10ms: a consumer rarely waits long, so few blocks reach
// the token's end) or every 250 ms (every=250ms: each list consumer waits about a second, so
// blocks often reach it and are split). Run with -benchtime=1x.
func BenchmarkBlockingConsumers(b *testing.B) {
	r := newGatewayRig(b, blockLife)
	kinds := []client[string]{{"plain", "plain"}, {"entraredis", "entraredis"}}
	for _, every := range []time.Duration{10 * time.Millisecond, 250 * time.Millisecond} {
		for _, k := range ordered(kinds) {
			b.Run(fmt.Sprintf("every=%v/client=%s", every, k.name), func(b *testing.B) {
				for i := range b.N {
					runBlocking(b, r, k.v, every, fmt.Sprintf("bench:block:%s:%d:%d", k.v, time.Now().UnixNano(), i))
				}
			})
		}
	}
}

// consumed is what one consumer got: the push-to-pop latency of each element.
type consumed struct {
	lat  []time.Duration
	errs int
}

func (c *consumed) add(ts string) {
	ns, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		c.errs++
		return
	}
	c.lat = append(c.lat, time.Since(time.Unix(0, ns)))
}

func runBlocking(b *testing.B, r *gwRig, kind string, every time.Duration, key string) {
	var dials atomic.Int64
	opt := r.options(0, &dials) // go-redis's default pool: 10 per CPU, enough for 6 blocked consumers and the producer
	var c *redis.Client
	var h *hook.Hook
	var p *provider.Provider
	if kind == "entraredis" {
		var err error
		if p, err = provider.New(r.iss, nil); err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		h = hook.New(p, nil)
		defer h.Close()
		c = entraredis.NewClient(h, opt)
	} else {
		tok, _, err := r.iss.Mint(time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		opt.Username, opt.Password = r.iss.ObjectID(), tok
		c = redis.NewClient(opt)
	}
	defer c.Close()
	ctx := context.Background()
	list, stream := key+":list", key+":stream"
	if err := c.Ping(ctx).Err(); err != nil {
		b.Fatal(err)
	}

	var wg sync.WaitGroup
	var popped, read [blockStreamCon]atomic.Int64 // read per stream consumer; popped[0]: all list consumers
	lists := make([]consumed, blockListCons)
	streams := make([]consumed, blockStreamCon)
	for i := range blockListCons {
		wg.Go(func() {
			for {
				v, err := c.BLPop(ctx, 0, list).Result()
				if err != nil {
					lists[i].errs++
					time.Sleep(10 * time.Millisecond) // no busy loop on a broken client
					continue
				}
				if v[1] == "stop" {
					return
				}
				lists[i].add(v[1])
				popped[0].Add(1)
			}
		})
	}
	for i := range blockStreamCon {
		wg.Go(func() {
			last := "$"
			for {
				s, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 100, Block: 0}).Result()
				if err != nil {
					streams[i].errs++
					time.Sleep(10 * time.Millisecond)
					continue
				}
				for _, m := range s[0].Messages {
					last = m.ID
					ts, _ := m.Values["t"].(string)
					if ts == "stop" {
						return
					}
					streams[i].add(ts)
					read[i].Add(1)
				}
			}
		})
	}
	// XREAD from $ sees only what is added after it blocks: start producing once all are blocked.
	if !waitFor(10*time.Second, 5*time.Millisecond, func() bool { return blockedClients(ctx, c) >= blockListCons+blockStreamCon }) {
		b.Fatalf("the consumers did not block: %d blocked clients", blockedClients(ctx, c))
	}

	var gw0 = r.gw.Stats()
	var st0 hook.Stats
	var gen0 uint64
	if h != nil {
		st0 = h.Stats()
		info, _ := p.Token()
		gen0 = info.Generation
	}
	var pushed, added, perrs int64
	b.ResetTimer()
	tick := time.NewTicker(every)
	for end := time.Now().Add(blockRun); time.Now().Before(end); <-tick.C {
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := c.RPush(ctx, list, ts).Err(); err != nil {
			perrs++
		} else {
			pushed++
		}
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"t", ts}}).Err(); err != nil {
			perrs++
		} else {
			added++
		}
	}
	tick.Stop()
	all := func() bool {
		ok := popped[0].Load() == pushed
		for i := range blockStreamCon {
			ok = ok && read[i].Load() == added
		}
		return ok
	}
	caughtUp := waitFor(20*time.Second, 5*time.Millisecond, all)
	b.StopTimer()
	gw := r.gw.Stats()
	var rotations uint64
	var st hook.Stats
	if h != nil {
		st = h.Stats()
		info, _ := p.Token()
		rotations = info.Generation - gen0
	}

	// Stop the consumers: one "stop" element each.
	for range blockListCons {
		if err := c.RPush(ctx, list, "stop").Err(); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"t", "stop"}}).Err(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		b.Fatalf("consumers still blocked 20 s after their stop elements: popped %d of %d", popped[0].Load(), pushed)
	}

	var listLat, streamLat []time.Duration
	errs := perrs
	for _, l := range lists {
		listLat = append(listLat, l.lat...)
		errs += int64(l.errs)
	}
	for _, s := range streams {
		streamLat = append(streamLat, s.lat...)
		errs += int64(s.errs)
	}
	if !caughtUp {
		b.Errorf("consumed != pushed: list %d popped of %d pushed; stream %d and %d read of %d added",
			popped[0].Load(), pushed, read[0].Load(), read[1].Load(), added)
	}
	if errs != 0 {
		b.Errorf("%d errors (producer %d)", errs, perrs)
	}
	if closes := gw.ExpiryCloses - gw0.ExpiryCloses; h != nil && closes != 0 {
		b.Errorf("%d connections closed at their token's expiry, want 0 (a block reached past the token)", closes)
	}
	slices.Sort(listLat)
	slices.Sort(streamLat)
	if len(listLat) == 0 || len(streamLat) == 0 {
		b.Fatal("nothing consumed")
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(float64(pushed), "pushed")
	b.ReportMetric(float64(len(listLat)), "popped")
	b.ReportMetric(float64(added), "xadded")
	b.ReportMetric(float64(min(read[0].Load(), read[1].Load())), "xread-min")
	b.ReportMetric(us(pct(listLat, 50)), "blpop-p50-µs")
	b.ReportMetric(us(pct(listLat, 99)), "blpop-p99-µs")
	b.ReportMetric(us(listLat[len(listLat)-1]), "blpop-max-µs")
	b.ReportMetric(us(pct(streamLat, 50)), "xread-p50-µs")
	b.ReportMetric(us(pct(streamLat, 99)), "xread-p99-µs")
	b.ReportMetric(us(streamLat[len(streamLat)-1]), "xread-max-µs")
	b.ReportMetric(float64(gw.ExpiryCloses-gw0.ExpiryCloses), "expiry-closes")
	b.ReportMetric(float64(errs), "errors")
	b.ReportMetric(float64(rotations), "rotations")
	if rotations > 0 {
		b.ReportMetric(float64(st.BlockingSplits-st0.BlockingSplits)/float64(rotations), "splits/rotation")
		b.ReportMetric(float64(st.ConnsRetired-st0.ConnsRetired), "retired")
		b.ReportMetric(float64(st.Retries-st0.Retries), "retries")
	}
}

// blockedClients returns the server's count of clients in a blocking command (INFO clients).
func blockedClients(ctx context.Context, c *redis.Client) int {
	info, err := c.InfoMap(ctx, "clients").Result()
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(info["Clients"]["blocked_clients"])
	return n
}

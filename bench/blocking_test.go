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
	blockRun       = 10 * time.Second // producing time: about 4 rotations
	blockListCons  = 4                // consumers in BLPOP 0, per client
	blockStreamCon = 2                // consumers in XREAD BLOCK 0, per client
)

// BenchmarkBlockingConsumers: per client, 4 consumers wait in BLPOP 0 on a list and 2 in XREAD
// BLOCK 0 on a stream (from $, then from the last ID each has seen), while a producer RPUSHes and
// XADDs its clock at a steady rate for 10 s, through entratest's TLS gateway in front of a
// redis-server. It asserts that the consumers get every element (list: popped == pushed; stream:
// each consumer reads every entry), that no command fails and that the gateway closed none of
// entraredis's connections at its token's expiry; it reports the push-to-pop latency (p50, p99,
// max) of each client and command, their ratio, the closes at expiry and the hook's blocking
// splits per rotation.
//
// Two clients run side by side in the same run, on their own keys, fed by the same producer
// loop (the order alternating each tick), so that the load of a shared machine hits both alike:
// entraredis is entraredis.NewClient with 3 s tokens (the blocks would outlast the token, so the
// hook sends them as shorter blocks and renews between them: hook.Stats.BlockingSplits); plain is
// plain go-redis with a static token valid for an hour on the same gateway, what the same
// consumers cost when tokens do not expire.
//
// The producer pushes every 10 ms (every=10ms: a consumer rarely waits long, so few blocks reach
// the token's end) or every 250 ms (every=250ms: each list consumer waits about a second, so
// blocks often reach it and are split). Run with -benchtime=1x.
func BenchmarkBlockingConsumers(b *testing.B) {
	r := newGatewayRig(b, blockLife)
	for _, every := range []time.Duration{10 * time.Millisecond, 250 * time.Millisecond} {
		b.Run(fmt.Sprintf("every=%v", every), func(b *testing.B) {
			for range b.N {
				runBlocking(b, r, every)
			}
		})
	}
}

// consumer is what one consumer got: the push-to-pop latency of each element, its errors.
type consumer struct {
	lat  []time.Duration
	n    atomic.Int64
	errs atomic.Int64
}

func (c *consumer) add(ts string) {
	ns, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		c.errs.Add(1)
		return
	}
	c.lat = append(c.lat, time.Since(time.Unix(0, ns)))
	c.n.Add(1)
}

// blockSide is one client of the scenario with its keys, consumers and counts.
type blockSide struct {
	name          string
	c             *redis.Client
	p             *provider.Provider // entraredis only
	h             *hook.Hook         // entraredis only
	list, stream  string
	lists         [blockListCons]consumer
	streams       [blockStreamCon]consumer
	pushed, added int64
	perrs         int64
	wg            sync.WaitGroup
}

func newBlockSide(b *testing.B, r *gwRig, name string) *blockSide {
	var dials atomic.Int64
	opt := r.options(0, &dials) // go-redis's default pool: 10 per CPU, enough for 6 blocked consumers and the producer
	s := &blockSide{name: name}
	key := fmt.Sprintf("bench:block:%s:%d", name, time.Now().UnixNano())
	s.list, s.stream = key+":list", key+":stream"
	if name == "entraredis" {
		var err error
		if s.p, err = provider.New(r.iss, nil); err != nil {
			b.Fatal(err)
		}
		s.h = hook.New(s.p, nil)
		s.c = entraredis.NewClient(s.h, opt)
	} else {
		tok, _, err := r.iss.Mint(time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		opt.Username, opt.Password = r.iss.ObjectID(), tok
		s.c = redis.NewClient(opt)
	}
	if err := s.c.Ping(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	return s
}

func (s *blockSide) close() {
	_ = s.c.Close()
	if s.h != nil {
		_ = s.h.Close()
		_ = s.p.Close()
	}
}

func (s *blockSide) consume(ctx context.Context) {
	for i := range s.lists {
		con := &s.lists[i]
		s.wg.Go(func() {
			for {
				v, err := s.c.BLPop(ctx, 0, s.list).Result()
				if err != nil {
					con.errs.Add(1)
					time.Sleep(10 * time.Millisecond) // no busy loop on a broken client
					continue
				}
				if v[1] == "stop" {
					return
				}
				con.add(v[1])
			}
		})
	}
	for i := range s.streams {
		con := &s.streams[i]
		s.wg.Go(func() {
			last := "$"
			for {
				res, err := s.c.XRead(ctx, &redis.XReadArgs{Streams: []string{s.stream, last}, Count: 100, Block: 0}).Result()
				if err != nil {
					con.errs.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				for _, m := range res[0].Messages {
					last = m.ID
					ts, _ := m.Values["t"].(string)
					if ts == "stop" {
						return
					}
					con.add(ts)
				}
			}
		})
	}
}

// produce pushes the clock once to the list and the stream.
func (s *blockSide) produce(ctx context.Context) {
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := s.c.RPush(ctx, s.list, ts).Err(); err != nil {
		s.perrs++
	} else {
		s.pushed++
	}
	if err := s.c.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, Values: []any{"t", ts}}).Err(); err != nil {
		s.perrs++
	} else {
		s.added++
	}
}

// caughtUp reports whether every element pushed has been consumed (every stream consumer reads
// every entry).
func (s *blockSide) caughtUp() bool {
	var popped int64
	for i := range s.lists {
		popped += s.lists[i].n.Load()
	}
	ok := popped == s.pushed
	for i := range s.streams {
		ok = ok && s.streams[i].n.Load() == s.added
	}
	return ok
}

// stop sends each consumer a "stop" element and waits for them to return.
func (s *blockSide) stop(ctx context.Context) error {
	for range blockListCons {
		if err := s.c.RPush(ctx, s.list, "stop").Err(); err != nil {
			return err
		}
	}
	if err := s.c.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, Values: []any{"t", "stop"}}).Err(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("%s: consumers still blocked 20 s after their stop elements", s.name)
	}
}

func runBlocking(b *testing.B, r *gwRig, every time.Duration) {
	ctx := context.Background()
	sides := []*blockSide{newBlockSide(b, r, "plain"), newBlockSide(b, r, "entraredis")}
	plain, entra := sides[0], sides[1]
	for _, s := range sides {
		defer s.close()
		s.consume(ctx)
	}
	// XREAD from $ sees only what is added after it blocks: start producing once all are blocked.
	want := len(sides) * (blockListCons + blockStreamCon)
	if !waitFor(10*time.Second, 5*time.Millisecond, func() bool { return blockedClients(ctx, plain.c) >= want }) {
		b.Fatalf("the consumers did not block: %d blocked clients of %d", blockedClients(ctx, plain.c), want)
	}

	gw0, st0 := r.gw.Stats(), entra.h.Stats()
	info0, _ := entra.p.Token()
	b.ResetTimer()
	tick := time.NewTicker(every)
	for i, end := 0, time.Now().Add(blockRun); time.Now().Before(end); i++ {
		sides[i%2].produce(ctx)
		sides[(i+1)%2].produce(ctx)
		<-tick.C
	}
	tick.Stop()
	caughtUp := waitFor(20*time.Second, 5*time.Millisecond, func() bool { return plain.caughtUp() && entra.caughtUp() })
	b.StopTimer()
	gw, st := r.gw.Stats(), entra.h.Stats()
	info, _ := entra.p.Token()
	rotations := info.Generation - info0.Generation
	if !caughtUp {
		for _, s := range sides {
			b.Errorf("%s: consumed != pushed: list %d pushed, stream %d added, consumers %s", s.name, s.pushed, s.added, s.counts())
		}
	}
	for _, s := range sides {
		if err := s.stop(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if closes := gw.ExpiryCloses - gw0.ExpiryCloses; closes != 0 {
		b.Errorf("%d connections closed at their token's expiry, want 0 (a block reached past the token)", closes)
	}

	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	stats := map[string][3]time.Duration{} // side-kind: p50, p99, max
	for _, s := range sides {
		errs := s.perrs
		var listLat, streamLat []time.Duration
		for i := range s.lists {
			listLat = append(listLat, s.lists[i].lat...)
			errs += s.lists[i].errs.Load()
		}
		for i := range s.streams {
			streamLat = append(streamLat, s.streams[i].lat...)
			errs += s.streams[i].errs.Load()
		}
		if errs != 0 {
			b.Errorf("%s: %d errors (producer %d)", s.name, errs, s.perrs)
		}
		if len(listLat) == 0 || len(streamLat) == 0 {
			b.Fatalf("%s: nothing consumed", s.name)
		}
		b.ReportMetric(float64(s.pushed), s.name+"-pushed")
		b.ReportMetric(float64(len(listLat)), s.name+"-popped")
		b.ReportMetric(float64(s.added), s.name+"-xadded")
		b.ReportMetric(float64(min(s.streams[0].n.Load(), s.streams[1].n.Load())), s.name+"-xread-min")
		b.ReportMetric(float64(errs), s.name+"-errors")
		for kind, lat := range map[string][]time.Duration{"blpop": listLat, "xread": streamLat} {
			slices.Sort(lat)
			q := [3]time.Duration{pct(lat, 50), pct(lat, 99), lat[len(lat)-1]}
			stats[s.name+"-"+kind] = q
			b.ReportMetric(us(q[0]), s.name+"-"+kind+"-p50-µs")
			b.ReportMetric(us(q[1]), s.name+"-"+kind+"-p99-µs")
			b.ReportMetric(us(q[2]), s.name+"-"+kind+"-max-µs")
		}
	}
	for _, kind := range []string{"blpop", "xread"} {
		e, p := stats["entraredis-"+kind], stats["plain-"+kind]
		b.ReportMetric(float64(e[0])/float64(p[0]), kind+"-p50-ratio")
		b.ReportMetric(float64(e[1])/float64(p[1]), kind+"-p99-ratio")
	}
	b.ReportMetric(float64(gw.ExpiryCloses-gw0.ExpiryCloses), "expiry-closes")
	b.ReportMetric(float64(rotations), "rotations")
	b.ReportMetric(float64(st.BlockingSplits-st0.BlockingSplits)/float64(max(rotations, 1)), "splits/rotation")
	b.ReportMetric(float64(st.ConnsRetired-st0.ConnsRetired), "retired")
	b.ReportMetric(float64(st.Retries-st0.Retries), "retries")
}

func (s *blockSide) counts() string {
	var out []string
	for i := range s.lists {
		out = append(out, fmt.Sprintf("BLPOP %d", s.lists[i].n.Load()))
	}
	for i := range s.streams {
		out = append(out, fmt.Sprintf("XREAD %d", s.streams[i].n.Load()))
	}
	return fmt.Sprint(out)
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

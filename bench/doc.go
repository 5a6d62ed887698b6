// Package bench measures what entraredis costs next to plain go-redis, against a real redis-server
// on loopback. It holds only Go benchmarks (files *_test.go), so `go test ./...` runs nothing here
// unless -bench is given; `make bench` runs them all, alternating plain and entraredis runs, and
// writes BENCHMARKS.md.
//
// What each benchmark measures:
//
//   - BenchmarkCredentials: the warm path go-redis calls for each new connection (ns/op, allocs/op),
//     the provider's CredentialsProviderContext next to a closure returning constant strings.
//   - BenchmarkCommands: GET and SET, 1 and 8 goroutines, plain go-redis with a static ACL password
//     next to entraredis.NewClient (provider, hook, connection guard) on the same server;
//     BenchmarkInterleaved: the same with both clients taking turns within one benchmark, for a
//     ratio that the load of a shared machine does not skew, and a pipeline of 10 SETs of 16 KiB.
//   - BenchmarkFullDuplex (built with -tags goredis_newest: go-redis v9.23+): GET and INCR at 1, 16
//     and 64 goroutines through go-redis's full-duplex autopipeliner, four clients in turns: plain
//     go-redis, the same with a no-op hook (go-redis's own cost of any hook there, as evidence for
//     its maintainers), entraredis with full duplex in its options (no hook) and entraredis with its
//     hook; socket reads and writes per command; pprof labels per client (BENCH_PPROF_LABELS=1).
//   - BenchmarkRotationLatency: 32 goroutines through token rotations (2 s tokens); latency
//     percentiles of operations near a rotation next to the others, for plain go-redis (control),
//     entraredis and go-redis's own streaming re-authentication.
//   - BenchmarkIdentityLoad and BenchmarkFleet: calls to the identity endpoint per rotation under 200
//     concurrent callers, and how the refresh jitter spreads a fleet's calls.
//   - BenchmarkRotationMemory: heap and goroutines after 1,000 rotations next to after 10.
//   - BenchmarkOutage: the identity provider down past the token's expiry with 1, 64 and 512
//     goroutines sending commands: credential calls and dials per second, and the time from its
//     return to the first command that succeeds.
//   - BenchmarkIdlePool: a pool of 8 or 32 connections idle through 3 rotations of 3 s tokens behind
//     entratest's TLS gateway, then used: redials per rotation, closes at expiry, idle renewals and
//     the first commands' latency, for entraredis and for go-redis with the provider alone.
//   - BenchmarkBlockingConsumers: consumers in BLPOP 0 and XREAD BLOCK 0 (from $) through rotations
//     while a producer pushes at a steady rate: consumed == pushed (asserted), closes at expiry,
//     blocking splits per rotation, push-to-pop latency next to plain go-redis without expiry.
//
// The scenario benchmarks (rotation, identity load, fleet, memory, outage, idle pool, blocking
// consumers) run one fixed scenario per iteration and report their figures with b.ReportMetric;
// run them with -benchtime=1x.
package bench

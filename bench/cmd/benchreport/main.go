// Command benchreport writes BENCHMARKS.md from the raw output of bench/'s benchmarks and the
// benchstat tables made from it. bench/run.sh (make bench) runs it; it is not meant to be run by
// hand.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

func main() {
	var (
		rawDir    = flag.String("raw", "", "directory of raw benchmark output (commands.txt, rotation.txt, identity.txt, memory.txt, outage.txt, idle.txt, blocking.txt)")
		statDir   = flag.String("stat", "", "directory of benchstat tables, same names")
		stderrDir = flag.String("stderr", "", "directory of the benchmarks' standard error (go-redis's log lines), same names")
		start     = flag.String("start", "", "when the run started (UTC)")
		seconds   = flag.Int("seconds", 0, "how long the run took")
		loadStart = flag.String("load-start", "", "load average when the run started")
		command   = flag.String("command", "make bench", "the command that made the report")
		floorV    = flag.String("goredis-floor", "", "go-redis version of the floor build (go.mod's)")
		newestV   = flag.String("goredis-newest", "", "go-redis version of the newest build; empty: none ran")
	)
	flag.Parse()
	rs := results{}
	var failures []string
	for _, f := range []string{"commands.txt", "rotation.txt", "identity.txt", "memory.txt", "outage.txt", "idle.txt", "blocking.txt"} {
		fails, err := rs.read(filepath.Join(*rawDir, f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
		}
		failures = append(failures, fails...)
	}
	// At the newest go-redis: the interleaved commands again (their names are the floor's, so
	// another map), and the full-duplex ones, which exist there only.
	rsN := results{}
	for _, f := range []string{"commands-newest.txt", "fullduplex.txt"} {
		if _, err := os.Stat(filepath.Join(*rawDir, f)); err != nil {
			continue
		}
		fails, err := rsN.read(filepath.Join(*rawDir, f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
		}
		failures = append(failures, fails...)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	r := report{w: w, rs: rs, rsN: rsN, floor: *floorV, newest: *newestV}
	r.header(*start, *seconds, *loadStart, *command)
	r.summary()
	if len(failures) > 0 {
		r.p("## Failures\n\n```\n%s\n```\n\n", strings.Join(failures, "\n"))
	}
	r.details()
	r.logLines(*stderrDir)
	r.raw(*statDir, *rawDir)
	r.method()
}

// results maps a benchmark name (without the -GOMAXPROCS suffix) and a unit to the values of
// every run.
type results map[string]map[string][]float64

// read adds the benchmark lines of a raw output file and returns its failure lines.
func (rs results) read(path string) (failures []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "panic:") ||
			(strings.HasPrefix(line, "    ") && len(failures) > 0 && len(failures) < 40) {
			failures = append(failures, filepath.Base(path)+": "+line)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 4 || len(fs)%2 != 0 {
			continue
		}
		name := fs[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if rs[name] == nil {
			rs[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(fs); i += 2 {
			v, err := strconv.ParseFloat(fs[i], 64)
			if err != nil {
				continue
			}
			rs[name][fs[i+1]] = append(rs[name][fs[i+1]], v)
		}
	}
	return failures, sc.Err()
}

// get returns the values of name's unit, or nil.
func (rs results) get(name, unit string) []float64 { return rs[name][unit] }

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Max(vs)
}

func minOf(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	return slices.Min(vs)
}

func sum(vs []float64) float64 {
	t := 0.0
	for _, v := range vs {
		t += v
	}
	return t
}

type report struct {
	w             io.Writer
	rs            results // at the floor go-redis (go.mod's)
	rsN           results // at the newest go-redis: interleaved commands and full duplex
	floor, newest string  // the go-redis versions
}

func (r report) p(format string, args ...any) { fmt.Fprintf(r.w, format, args...) }

func verdict(ok bool, measured bool) string {
	switch {
	case !measured:
		return "not measured"
	case ok:
		return "met"
	}
	return "**missed**"
}

func num(v float64, prec int) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func (r report) header(start string, seconds int, load, command string) {
	r.p("# Benchmarks\n\n")
	r.p("Written by `make bench` (bench/run.sh); do not edit by hand, run it again. What each figure means\n")
	r.p("and how it is measured: [Method](#method) below and the doc comments in [bench/](bench/).\n\n")
	r.p("| machine | |\n|---|---|\n")
	r.p("| CPUs (`nproc`) | %d |\n", runtime.NumCPU())
	r.p("| CPU model | %s |\n", cpuModel())
	r.p("| Go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	r.p("| redis-server | %s |\n", redisVersion())
	r.p("| go-redis | %s (go.mod's, the floor: every table but those marked newest); %s (newest: the tables marked so) |\n",
		orNone(r.floor), orNone(r.newest))
	r.p("| date (UTC) | %s |\n", start)
	r.p("| load average at start (1, 5, 15 min) | %s |\n", load)
	r.p("| duration | %d s |\n", seconds)
	r.p("| command | `%s` |\n\n", command)
}

func orNone(v string) string {
	if v == "" {
		return "not measured"
	}
	return v
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func redisVersion() string {
	out, err := execOutput("redis-server", "--version")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}

const (
	cred     = "BenchmarkCredentials/path=%s/client=%s"
	commands = "BenchmarkCommands/op=%s/g=%d/client=%s"
	rotation = "BenchmarkRotationLatency/client=%s"
	inter    = "BenchmarkInterleaved/op=%s/g=%d"
	fduplex  = "BenchmarkFullDuplex/op=%s/g=%d"
	identity = "BenchmarkIdentityLoad"
	fleet    = "BenchmarkFleet"
	memory   = "BenchmarkRotationMemory"
	outage   = "BenchmarkOutage/callers=%d"
	idle     = "BenchmarkIdlePool/conns=%d/client=%s"
	blocking = "BenchmarkBlockingConsumers/every=%s"
)

var (
	outageCallers = []int{1, 64, 512}                                                 // concurrencies of the outage scenario
	idleConns     = []int{8, 32}                                                      // pool sizes of the idle-pool scenario
	blockEvery    = []string{"10ms", "250ms"}                                         // producer periods of the blocking scenario
	idleClients   = []string{"entraredis", "streaming"}                               // entraredis; go-redis with the provider alone
	blockClients  = []string{"plain", "entraredis"}                                   // plain go-redis without expiry; entraredis
	blockKinds    = []string{"blpop", "xread"}                                        // the consumers' commands
	blockKindName = map[string]string{"blpop": "BLPOP 0", "xread": "XREAD BLOCK 0 $"} // as the tables show them
	interOps      = []string{"get", "set", "pipeline"}                                // BenchmarkInterleaved's
	fdOps         = []string{"get", "incr"}                                           // BenchmarkFullDuplex's
	fdGoroutines  = []int{1, 16, 64}
)

func (r report) summary() {
	rs := r.rs
	r.p("## Targets\n\n")
	r.p("Medians over the runs (the number of runs is in the tables below).\n\n")
	r.p("| # | figure | measured | target | |\n|---|---|---|---|---|\n")

	// 1. Warm provider path.
	for _, path := range []string{"serial", "parallel"} {
		ns := rs.get(fmt.Sprintf(cred, path, "entraredis"), "ns/op")
		allocs := rs.get(fmt.Sprintf(cred, path, "entraredis"), "allocs/op")
		floor := median(rs.get(fmt.Sprintf(cred, path, "plain"), "ns/op"))
		r.p("| 1 | warm `CredentialsProviderContext`, %s | %s ns/op, %s allocs/op (a closure returning constants: %s ns) | <= 10 ns, 0 allocs | %s |\n",
			path, num(median(ns), 2), num(maxOf(allocs), 0), num(floor, 2),
			verdict(median(ns) <= 10 && maxOf(allocs) == 0, len(ns) > 0))
	}

	// 2. Throughput: the interleaved ratio (both clients in turns within one run) is the figure held
	// to the target; the separate runs give allocs/op (at the floor only).
	for _, v := range []struct {
		rs      results
		version string
	}{{rs, r.floor}, {r.rsN, r.newest + ", newest"}} {
		for _, op := range interOps {
			for _, g := range []int{1, 8} {
				in := fmt.Sprintf(inter, op, g)
				ratio := v.rs.get(in, "throughput-ratio")
				if len(ratio) == 0 && v.version != r.floor {
					continue
				}
				plain, entra := fmt.Sprintf(commands, op, g, "plain"), fmt.Sprintf(commands, op, g, "entraredis")
				pa, ea := median(v.rs.get(plain, "allocs/op")), median(v.rs.get(entra, "allocs/op"))
				allocs, allocsOK := "", true
				if !math.IsNaN(pa) {
					allocs, allocsOK = fmt.Sprintf("; allocs/op %s vs %s", num(ea, 0), num(pa, 0)), ea <= pa
				}
				r.p("| 2 | %s, %d goroutine(s), go-redis %s: throughput entraredis / plain | %s (runs %s to %s; %s vs %s ns/op; CPU ratio %s)%s | >= 0.98, no more allocs | %s |\n",
					strings.ToUpper(op), g, v.version, num(median(ratio), 3), num(minOf(ratio), 3), num(maxOf(ratio), 3),
					num(median(v.rs.get(in, "entraredis-ns/op")), 0), num(median(v.rs.get(in, "plain-ns/op")), 0),
					num(median(v.rs.get(in, "cpu-ratio")), 3), allocs,
					verdict(median(ratio) >= 0.98 && allocsOK, len(ratio) > 0))
			}
		}
	}

	// 2b. Full duplex (newest go-redis): entraredis (no hook: the options ask for full duplex) next
	// to plain go-redis; entraredis with its hook next to go-redis with a no-op hook.
	for _, op := range fdOps {
		for _, g := range fdGoroutines {
			n := fmt.Sprintf(fduplex, op, g)
			e, eh := r.rsN.get(n, "entraredis-vs-plain-ratio"), r.rsN.get(n, "entraredis-hooked-vs-hooked-ratio")
			r.p("| 2b | full duplex, %s, %d goroutine(s), go-redis %s: throughput entraredis / plain; with the hook / no-op hook | %s (runs %s to %s; per-turn median %s); %s (runs %s to %s); go-redis's own no-op hook / plain %s | >= 0.95; >= 0.95 | %s |\n",
				strings.ToUpper(op), g, r.newest+", newest", num(median(e), 3), num(minOf(e), 3), num(maxOf(e), 3),
				num(median(r.rsN.get(n, "entraredis-vs-plain-turn-p50")), 3),
				num(median(eh), 3), num(minOf(eh), 3), num(maxOf(eh), 3),
				num(median(r.rsN.get(n, "hooked-vs-plain-ratio")), 3),
				verdict(median(e) >= 0.95 && median(eh) >= 0.95, len(e) > 0))
		}
	}

	// 3. Latency during rotation.
	{
		e, p := fmt.Sprintf(rotation, "entraredis"), fmt.Sprintf(rotation, "plain")
		ratio := rs.get(e, "p99-ratio")
		errs := sum(rs.get(e, "errors"))
		st := fmt.Sprintf(rotation, "streaming")
		r.p("| 3 | p99 latency near a rotation / p99 steady, 2 s tokens, 32 goroutines | entraredis %s (worst run %s; p99 %s vs %s µs); plain go-redis control %s; go-redis streaming renewal %s; entraredis errors %s | <= 1.5, no errors | %s |\n",
			num(median(ratio), 2), num(maxOf(ratio), 2), num(median(rs.get(e, "p99-rotation-µs")), 0),
			num(median(rs.get(e, "p99-steady-µs")), 0), num(median(rs.get(p, "p99-ratio")), 2),
			num(median(rs.get(st, "p99-ratio")), 2), num(errs, 0),
			verdict(median(ratio) <= 1.5 && errs == 0, len(ratio) > 0))
	}

	// 4. Identity endpoint.
	{
		cpr := rs.get(identity, "calls/rotation")
		errs := sum(rs.get(identity, "errors"))
		r.p("| 4 | identity calls per rotation, 200 callers, 20 rotations | %s to %s over %d runs; caller errors %s | exactly 1 | %s |\n",
			num(minOf(cpr), 3), num(maxOf(cpr), 3), len(cpr), num(errs, 0),
			verdict(minOf(cpr) == 1 && maxOf(cpr) == 1 && errs == 0, len(cpr) > 0))
		jit := rs.get(fleet, "refresh-max-calls/s-jitter")
		r.p("| 4 | fleet of 50: most identity calls in any 1 s window (time scaled 1:%s) | refresh round: %s with the default jitter, %s without; start: %s (every instance needs its first token) | IMDS allows 20/s per VM | %s |\n",
			"300", num(median(jit), 0), num(median(rs.get(fleet, "refresh-max-calls/s-nojitter")), 0),
			num(median(rs.get(fleet, "start-max-calls/s-jitter")), 0), verdict(median(jit) <= 20, len(jit) > 0))
	}

	// 5. Memory.
	{
		live := rs.get(memory, "live-growth-B")
		inuse := rs.get(memory, "heapinuse-growth-B")
		gd := rs.get(memory, "goroutine-delta")
		left := rs.get(memory, "goroutines-left")
		r.p("| 5 | heap growth from 10 to 1,000 rotations, pool of 10 | live heap %s KiB (from 500 to 1,000: %s KiB), HeapInuse %s KiB | < 1 MB | %s |\n",
			num(median(live)/1024, 0), num(median(rs.get(memory, "live-growth-2nd-half-B"))/1024, 0), num(median(inuse)/1024, 0),
			verdict(maxOf(live) < 1<<20 && maxOf(inuse) < 1<<20, len(live) > 0))
		r.p("| 5 | goroutines, 1,000 rotations vs 10; left after Close | %s; %s | 0; 0 | %s |\n",
			num(median(gd), 0), num(median(left), 0), verdict(maxOf(gd) <= 0 && maxOf(left) <= 0, len(gd) > 0))
	}

	// 6. Identity provider outage past expiry.
	{
		var calls, dials, rec []string
		measured, ok := false, true
		for _, c := range outageCallers {
			n := fmt.Sprintf(outage, c)
			cs, ds, gs, ms := rs.get(n, "calls/s"), rs.get(n, "dials/s"), rs.get(n, "gwconns/s"), rs.get(n, "recovery-ms")
			measured = measured || len(cs) > 0
			ok = ok && len(cs) > 0 && maxOf(cs) <= 4 && maxOf(ds) <= maxOf(cs) && maxOf(gs) <= maxOf(cs) && maxOf(ms) < 2000
			calls = append(calls, num(maxOf(cs), 2))
			dials = append(dials, num(maxOf(ds), 2)+" / "+num(maxOf(gs), 2))
			rec = append(rec, num(maxOf(ms), 0))
		}
		r.p("| 6 | identity provider down past expiry, 1 / 64 / 512 goroutines: credential calls/s; dials/s (hook / gateway); ms from its return to the first command that succeeds | %s; %s; %s | <= 4/s; <= calls/s; < 2000 ms | %s |\n",
			strings.Join(calls, " / "), strings.Join(dials, "; "), strings.Join(rec, " / "), verdict(ok, measured))
	}

	// 7. Idle pool through rotations.
	{
		var parts []string
		measured, ok := false, true
		for _, n := range idleConns {
			e, st := fmt.Sprintf(idle, n, "entraredis"), fmt.Sprintf(idle, n, "streaming")
			d, cl := rs.get(e, "dials/rotation"), rs.get(e, "expiry-closes")
			measured = measured || len(d) > 0
			ok = ok && len(d) > 0 && maxOf(d) == 0 && maxOf(cl) == 0 && sum(rs.get(e, "errors")) == 0
			parts = append(parts, fmt.Sprintf("%d conns: entraredis %s closes, %s redials/rotation, first GET p50 %s ms (max %s); provider alone %s closes, %s redials/rotation, first GET p50 %s ms (max %s)",
				n, num(maxOf(cl), 0), num(maxOf(d), 2), num(median(rs.get(e, "first-p50-ms")), 2), num(maxOf(rs.get(e, "first-max-ms")), 2),
				num(median(rs.get(st, "expiry-closes")), 0), num(median(rs.get(st, "dials/rotation")), 2),
				num(median(rs.get(st, "first-p50-ms")), 2), num(maxOf(rs.get(st, "first-max-ms")), 2)))
		}
		r.p("| 7 | idle pool through 3 rotations (3 s tokens, TLS gateway) | %s | 0 closes at expiry, 0 redials | %s |\n",
			strings.Join(parts, "; "), verdict(ok, measured))
	}

	// 8. Blocking consumers through rotations.
	{
		var parts []string
		measured, ok := false, true
		for _, every := range blockEvery {
			n := fmt.Sprintf(blocking, every)
			measured = measured || len(rs.get(n, "expiry-closes")) > 0
			consumed, pushed := 0.0, 0.0
			for _, c := range blockClients {
				p, a := rs.get(n, c+"-pushed"), rs.get(n, c+"-xadded")
				ok = ok && len(p) > 0 && slices.Equal(p, rs.get(n, c+"-popped")) && slices.Equal(a, rs.get(n, c+"-xread-min")) &&
					sum(rs.get(n, c+"-errors")) == 0
				if c == "entraredis" {
					consumed, pushed = sum(rs.get(n, c+"-popped"))+sum(rs.get(n, c+"-xread-min")), sum(p)+sum(a)
				}
			}
			ok = ok && maxOf(rs.get(n, "expiry-closes")) == 0
			parts = append(parts, fmt.Sprintf("every %s: consumed %s of %s, %s closes, %s splits/rotation, p50 ratio BLPOP %s XREAD %s, p99 ratio BLPOP %s XREAD %s",
				every, num(consumed, 0), num(pushed, 0), num(maxOf(rs.get(n, "expiry-closes")), 0), num(median(rs.get(n, "splits/rotation")), 2),
				num(median(rs.get(n, "blpop-p50-ratio")), 2), num(median(rs.get(n, "xread-p50-ratio")), 2),
				num(median(rs.get(n, "blpop-p99-ratio")), 2), num(median(rs.get(n, "xread-p99-ratio")), 2)))
		}
		r.p("| 8 | blocking consumers (4 BLPOP 0, 2 XREAD BLOCK 0 from $) through rotations, 3 s tokens; push-to-pop latency entraredis / plain go-redis without expiry, side by side | %s | consumed == pushed, 0 closes at expiry, 0 errors | %s |\n",
			strings.Join(parts, "; "), verdict(ok, measured))
	}
	r.p("\n")
}

func (r report) details() {
	rs := r.rs
	r.p("## Figures\n\n")

	r.p("### 1. Warm credentials path\n\n| path | client | ns/op | B/op | allocs/op | runs |\n|---|---|---|---|---|---|\n")
	for _, path := range []string{"serial", "parallel"} {
		for _, c := range []string{"plain", "entraredis"} {
			n := fmt.Sprintf(cred, path, c)
			r.p("| %s | %s | %s | %s | %s | %d |\n", path, c, num(median(rs.get(n, "ns/op")), 2),
				num(median(rs.get(n, "B/op")), 0), num(median(rs.get(n, "allocs/op")), 0), len(rs.get(n, "ns/op")))
		}
	}

	r.p("\n### 2. Commands\n\nInterleaved: both clients take turns in chunks of 200 operations within one benchmark, so that\n")
	r.p("the load of the machine hits both alike; ratio = entraredis throughput / plain throughput (above 1:\n")
	r.p("entraredis was faster). Medians over the runs.\n\n")
	r.p("PIPELINE: a pipeline of 10 SETs of 16 KiB values per operation (turns of 40). GET and SET: 100-byte values.\n\n")
	r.p("| go-redis | op | goroutines | plain ns/op | entraredis ns/op | throughput ratio (min-max) | plain CPU ns/op | entraredis CPU ns/op | CPU ratio | runs |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range []struct {
		rs      results
		version string
	}{{rs, r.floor}, {r.rsN, r.newest + " (newest)"}} {
		for _, op := range interOps {
			for _, g := range []int{1, 8} {
				in := fmt.Sprintf(inter, op, g)
				ratio := v.rs.get(in, "throughput-ratio")
				if len(ratio) == 0 && v.version != r.floor {
					continue
				}
				r.p("| %s | %s | %d | %s | %s | %s (%s-%s) | %s | %s | %s | %d |\n", v.version, strings.ToUpper(op), g,
					num(median(v.rs.get(in, "plain-ns/op")), 0), num(median(v.rs.get(in, "entraredis-ns/op")), 0),
					num(median(ratio), 3), num(minOf(ratio), 3), num(maxOf(ratio), 3),
					num(median(v.rs.get(in, "plain-cpu-ns/op")), 0), num(median(v.rs.get(in, "entraredis-cpu-ns/op")), 0),
					num(median(v.rs.get(in, "cpu-ratio")), 3), len(ratio))
			}
		}
	}
	r.p("\nSeparate runs (each client in its own sub-benchmark, the order alternating between runs): median\n")
	r.p("ns/op (min-max); ratio = plain ns/op / entraredis ns/op. More exposed to the machine's load.\n\n")
	r.p("| op | goroutines | plain ns/op | entraredis ns/op | throughput ratio | plain CPU ns/op | entraredis CPU ns/op | CPU ratio | allocs/op plain / entraredis | B/op plain / entraredis | runs |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, op := range []string{"get", "set"} {
		for _, g := range []int{1, 8} {
			p, e := fmt.Sprintf(commands, op, g, "plain"), fmt.Sprintf(commands, op, g, "entraredis")
			pn, en := rs.get(p, "ns/op"), rs.get(e, "ns/op")
			r.p("| %s | %d | %s (%s-%s) | %s (%s-%s) | %s | %s | %s | %s | %s / %s | %s / %s | %d |\n", strings.ToUpper(op), g,
				num(median(pn), 0), num(minOf(pn), 0), num(maxOf(pn), 0),
				num(median(en), 0), num(minOf(en), 0), num(maxOf(en), 0),
				num(median(pn)/median(en), 3),
				num(median(rs.get(p, "cpu-ns/op")), 0), num(median(rs.get(e, "cpu-ns/op")), 0),
				num(median(rs.get(p, "cpu-ns/op"))/median(rs.get(e, "cpu-ns/op")), 3),
				num(median(rs.get(p, "allocs/op")), 0), num(median(rs.get(e, "allocs/op")), 0),
				num(median(rs.get(p, "B/op")), 0), num(median(rs.get(e, "B/op")), 0), len(pn))
		}
	}

	r.fullDuplex()

	r.p("\n### 3. Latency during rotation\n\nMedians over the runs, µs; \"rotation\" operations overlap the 250 ms after a rotation event.\n")
	r.p("plain: static password (control); streaming: go-redis's own renewal (the provider as\n")
	r.p("StreamingCredentialsProvider, no hook), for comparison.\n\n")
	r.p("| client | p50 steady | p99 steady | max steady | p50 rotation | p99 rotation | max rotation | p99 ratio (worst) | ops per run | share near a rotation | tokens per run | new connections per run | renewed in place | retired by the guard | commands sent again | errors | runs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range []string{"plain", "entraredis", "streaming"} {
		n := fmt.Sprintf(rotation, c)
		g := func(u string, prec int) string { return num(median(rs.get(n, u)), prec) }
		r.p("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", c,
			g("p50-steady-µs", 0), g("p99-steady-µs", 0), g("max-steady-µs", 0),
			g("p50-rotation-µs", 0), g("p99-rotation-µs", 0), g("max-rotation-µs", 0),
			g("p99-ratio", 2), num(maxOf(rs.get(n, "p99-ratio")), 2), g("ops", 0), g("rotation-share", 2), g("tokens", 0),
			g("dials", 0), g("reauths", 0), g("retired", 0), g("retries", 0),
			num(sum(rs.get(n, "errors")), 0), len(rs.get(n, "ops")))
	}

	r.p("\n### 4. Identity endpoint\n\n| scenario | figure | per run | runs |\n|---|---|---|---|\n")
	list := func(vs []float64, prec int) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = num(v, prec)
		}
		return strings.Join(s, ", ")
	}
	for _, m := range []struct {
		unit, what string
		prec       int
	}{
		{"calls/rotation", "identity calls per token cached", 3},
		{"rotations", "rotations", 0},
		{"errors", "caller errors", 0},
		{"expiries", "tokens that expired before their refresh (callers fetched)", 0},
		{"callerCalls/rotation", "caller calls per rotation", 0},
	} {
		vs := rs.get(identity, m.unit)
		r.p("| 200 callers | %s | %s | %d |\n", m.what, list(vs, m.prec), len(vs))
	}
	for _, m := range []struct {
		unit, what string
		prec       int
	}{
		{"start-max-calls/s-jitter", "most calls in a 1 s window at the start, default jitter", 0},
		{"refresh-max-calls/s-jitter", "most calls in a 1 s window in the refresh round, default jitter", 0},
		{"refresh-spread-s-jitter", "refresh round spread, seconds, default jitter (1 min of jitter)", 1},
		{"start-max-calls/s-nojitter", "most calls in a 1 s window at the start, no jitter", 0},
		{"refresh-max-calls/s-nojitter", "most calls in a 1 s window in the refresh round, no jitter", 0},
		{"refresh-spread-s-nojitter", "refresh round spread, seconds, no jitter", 1},
		{"errors", "errors", 0},
	} {
		vs := rs.get(fleet, m.unit)
		r.p("| fleet of 50 | %s | %s | %d |\n", m.what, list(vs, m.prec), len(vs))
	}

	r.p("\n### 5. Memory through rotations\n\n| figure | value |\n|---|---|\n")
	for _, m := range []struct {
		unit, what string
		prec       int
	}{
		{"rotations", "rotations", 0},
		{"live-after-first-B", "live heap after 10 rotations, bytes", 0},
		{"live-growth-B", "live heap growth, 10 to 1,000 rotations, bytes", 0},
		{"live-growth-2nd-half-B", "live heap growth, 500 to 1,000 rotations, bytes", 0},
		{"heapinuse-growth-B", "HeapInuse growth, 10 to 1,000 rotations, bytes", 0},
		{"conns-delta", "pooled connections, 1,000 rotations minus 10", 0},
		{"goroutine-delta", "goroutines, 1,000 rotations minus 10", 0},
		{"goroutines-left", "goroutines left after Close", 0},
		{"calls/rotation", "identity calls per rotation", 3},
		{"dials/rotation", "new connections per rotation", 2},
		{"reauths/rotation", "connections renewed in place per rotation", 2},
		{"errors", "command errors", 0},
	} {
		r.p("| %s | %s |\n", m.what, list(rs.get(memory, m.unit), m.prec))
	}

	r.p("\n### 6. Identity provider outage past expiry\n\nOver 3 s past the token's expiry while the identity provider answers HTTP 500; each\n")
	r.p("goroutine sends an INCR every 10 ms. Values per run.\n\n")
	r.p("| goroutines | credential calls/s | dials/s (hook) | connections/s (gateway) | failed INCRs | ms to the first INCR after the return | runs |\n|---|---|---|---|---|---|---|\n")
	for _, c := range outageCallers {
		n := fmt.Sprintf(outage, c)
		r.p("| %d | %s | %s | %s | %s | %s | %d |\n", c, list(rs.get(n, "calls/s"), 2), list(rs.get(n, "dials/s"), 2),
			list(rs.get(n, "gwconns/s"), 2), list(rs.get(n, "failedINCR"), 0), list(rs.get(n, "recovery-ms"), 0), len(rs.get(n, "calls/s")))
	}

	r.p("\n### 7. Idle pool through rotations\n\nA warmed pool sits idle while 3 s tokens rotate 3 times behind entratest's TLS gateway (which\n")
	r.p("closes a connection at its token's expiry), then every connection runs one GET at once.\n")
	r.p("entraredis: entraredis.NewClient; provider alone: go-redis with the provider as its\n")
	r.p("StreamingCredentialsProvider. Medians over the runs; errors summed.\n\n")
	r.p("| connections | client | raw dials per rotation | closes at expiry (while idle) | AUTHs while idle per rotation and connection | idle renewals per rotation (hook) | first GET p50 ms | first GET max ms | errors | runs |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range idleConns {
		for _, c := range idleClients {
			k := fmt.Sprintf(idle, n, c)
			g := func(u string, prec int) string { return num(median(rs.get(k, u)), prec) }
			name := c
			if c == "streaming" {
				name = "provider alone"
			}
			r.p("| %d | %s | %s | %s (%s) | %s | %s | %s | %s | %s | %d |\n", n, name, g("dials/rotation", 2),
				g("expiry-closes", 0), g("expiry-closes-idle", 0), g("auths-idle/rotation/conn", 2), g("idle-reauths/rotation", 2),
				g("first-p50-ms", 2), g("first-max-ms", 2), num(sum(rs.get(k, "errors")), 0), len(rs.get(k, "errors")))
		}
	}

	r.p("\n### 8. Blocking consumers through rotations\n\nPer client, 4 consumers in BLPOP 0 on a list and 2 in XREAD BLOCK 0 on a stream (from $, then\n")
	r.p("from the last ID seen); one producer loop pushes its clock to both clients' list and stream every\n")
	r.p("10 ms or every 250 ms for 10 s. Both clients run side by side in the same run: entraredis with 3 s\n")
	r.p("tokens; plain go-redis with a token valid for an hour, same gateway. Latency from the push to the\n")
	r.p("consumer's receipt, µs, medians over the runs; counts summed over the runs.\n\n")
	r.p("| producer every | client | command | pushed | consumed (per consumer for XREAD) | p50 µs | p99 µs | max µs | errors | runs |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, every := range blockEvery {
		n := fmt.Sprintf(blocking, every)
		for _, c := range blockClients {
			for _, kind := range blockKinds {
				pushed, got := "-pushed", "-popped"
				if kind == "xread" {
					pushed, got = "-xadded", "-xread-min"
				}
				g := func(u string) string { return num(median(rs.get(n, c+"-"+kind+u)), 0) }
				r.p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", every, c, blockKindName[kind],
					num(sum(rs.get(n, c+pushed)), 0), num(sum(rs.get(n, c+got)), 0), g("-p50-µs"), g("-p99-µs"), g("-max-µs"),
					num(sum(rs.get(n, c+"-errors")), 0), len(rs.get(n, c+pushed)))
			}
		}
	}
	r.p("\nentraredis / plain, the ratio of each run's percentiles (median over the runs; above 1: entraredis\n")
	r.p("slower), and entraredis's connections through the rotations.\n\n")
	r.p("| producer every | BLPOP p50 ratio | BLPOP p99 ratio | XREAD p50 ratio | XREAD p99 ratio | rotations per run | blocking splits per rotation | closes at expiry | retired by the guard | commands sent again | runs |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, every := range blockEvery {
		n := fmt.Sprintf(blocking, every)
		g := func(u string, prec int) string { return num(median(rs.get(n, u)), prec) }
		r.p("| %s | %s (%s-%s) | %s (%s-%s) | %s (%s-%s) | %s (%s-%s) | %s | %s | %s | %s | %s | %d |\n", every,
			g("blpop-p50-ratio", 2), num(minOf(rs.get(n, "blpop-p50-ratio")), 2), num(maxOf(rs.get(n, "blpop-p50-ratio")), 2),
			g("blpop-p99-ratio", 2), num(minOf(rs.get(n, "blpop-p99-ratio")), 2), num(maxOf(rs.get(n, "blpop-p99-ratio")), 2),
			g("xread-p50-ratio", 2), num(minOf(rs.get(n, "xread-p50-ratio")), 2), num(maxOf(rs.get(n, "xread-p50-ratio")), 2),
			g("xread-p99-ratio", 2), num(minOf(rs.get(n, "xread-p99-ratio")), 2), num(maxOf(rs.get(n, "xread-p99-ratio")), 2),
			g("rotations", 0), g("splits/rotation", 2), num(sum(rs.get(n, "expiry-closes")), 0),
			num(sum(rs.get(n, "retired")), 0), num(sum(rs.get(n, "retries")), 0), len(rs.get(n, "rotations")))
	}
	r.p("\n")
}

// logLines counts go-redis's log lines by scenario and message: they show what go-redis did under
// the hood.
func (r report) logLines(dir string) {
	type row struct {
		file, msg string
		n         int
	}
	var rows []row
	for _, f := range []string{"commands.txt", "rotation.txt", "identity.txt", "memory.txt", "outage.txt", "idle.txt", "blocking.txt"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		counts := map[string]int{}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "" {
				continue
			}
			msg := line
			// "redis: 2006/01/02 15:04:05 file.go:123: message": keep the message, without ids.
			if fs := strings.SplitN(line, " ", 5); len(fs) == 5 && strings.HasPrefix(line, "redis: ") {
				msg = fs[4]
			}
			counts[stripNumbers(msg)]++
		}
		for m, n := range counts {
			rows = append(rows, row{strings.TrimSuffix(f, ".txt"), m, n})
		}
	}
	if len(rows) == 0 {
		return
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.file != b.file {
			return strings.Compare(a.file, b.file)
		}
		return b.n - a.n
	})
	r.p("## Log lines\n\nWhat the benchmarks wrote to standard error (go-redis logs through its own logger), by\n")
	r.p("scenario and message, all runs. In the rotation and idle-pool scenarios, go-redis's pool logs\n")
	r.p("\"rejected by hook\" for go-redis's own streaming re-authentication (client=streaming, the provider\n")
	r.p("alone): each connection marked for re-authentication is refused until go-redis has sent it an\n")
	r.p("AUTH; in the idle-pool scenario that AUTH meets a connection the server closed at expiry (EOF).\n\n| scenario | count | message |\n|---|---|---|\n")
	for i, w := range rows {
		if i == 30 {
			break
		}
		r.p("| %s | %d | `%s` |\n", w.file, w.n, strings.ReplaceAll(w.msg, "|", "\\|"))
	}
	r.p("\n")
}

func stripNumbers(s string) string {
	var b strings.Builder
	digits := false
	for _, c := range s {
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(c)
	}
	return b.String()
}

// fullDuplex is the table of BenchmarkFullDuplex (newest go-redis only).
func (r report) fullDuplex() {
	rs := r.rsN
	r.p("\n### 2b. Full duplex (go-redis %s, newest)\n\n", orNone(r.newest))
	r.p("GET and INCR through `AutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: true})`, four clients taking\n")
	r.p("turns in one run (the order changing every turn): plain go-redis; hooked: the same with a no-op hook\n")
	r.p("(go-redis's own cost of any hook on its full-duplex path); entraredis: `entraredis.NewClient` with\n")
	r.p("the full-duplex autopipeliner in its options, which it builds without a hook; entraredis+hook:\n")
	r.p("`entraredis.NewClient` made for the usual path and its autopipeliner made full-duplex afterwards.\n")
	r.p("ns/op per client, medians over the runs; ratio = throughput a / b over each run (median, min-max);\n")
	r.p("reads and writes: socket calls per command on the raw connection (under the guard).\n\n")
	r.p("| op | goroutines | plain ns/op | hooked ns/op | entraredis ns/op | entraredis+hook ns/op | entraredis / plain | entraredis+hook / hooked | hooked / plain | reads/op plain / entraredis | writes/op plain / entraredis | runs |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, op := range fdOps {
		for _, g := range fdGoroutines {
			n := fmt.Sprintf(fduplex, op, g)
			m := func(u string, prec int) string { return num(median(rs.get(n, u)), prec) }
			rg := func(u string) string {
				v := rs.get(n, u)
				return fmt.Sprintf("%s (%s-%s)", num(median(v), 3), num(minOf(v), 3), num(maxOf(v), 3))
			}
			r.p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %d |\n", strings.ToUpper(op), g,
				m("plain-ns/op", 0), m("hooked-ns/op", 0), m("entraredis-ns/op", 0), m("entraredis-hooked-ns/op", 0),
				rg("entraredis-vs-plain-ratio"), rg("entraredis-hooked-vs-hooked-ratio"), rg("hooked-vs-plain-ratio"),
				m("plain-reads/op", 3), m("entraredis-reads/op", 3), m("plain-writes/op", 3), m("entraredis-writes/op", 3),
				len(rs.get(n, "entraredis-vs-plain-ratio")))
		}
	}
}

// raw shows benchstat's table of the ns/op benchmarks, and the raw lines of the scenario ones:
// one run each, with many metrics, which benchstat would split into a table per metric.
func (r report) raw(statDir, rawDir string) {
	r.p("## Raw output\n\n")
	if b, err := os.ReadFile(filepath.Join(statDir, "commands.txt")); err == nil {
		r.p("<details><summary>benchstat, credentials and commands, separate runs (plain is the base)</summary>\n\n```\n%s```\n\n</details>\n\n", string(b))
	}
	for _, f := range []string{"rotation.txt", "identity.txt", "memory.txt", "outage.txt", "idle.txt", "blocking.txt", "commands-newest.txt", "fullduplex.txt"} {
		b, err := os.ReadFile(filepath.Join(rawDir, f))
		if err != nil {
			continue
		}
		var lines []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Benchmark") {
				lines = append(lines, strings.Join(strings.Fields(line), " "))
			}
		}
		r.p("<details><summary>%s</summary>\n\n```\n%s\n```\n\n</details>\n\n", strings.TrimSuffix(f, ".txt"), strings.Join(lines, "\n"))
	}
}

func (r report) method() {
	r.p(`## Method

- Server: a real redis-server on 127.0.0.1 (entratest.StartRedis) with ACL users. plain go-redis
  authenticates as a user whose password is a static token; entraredis with the tokens of
  internal/acltest, which adds each token as the password of an ACL user named by its oid claim and,
  at the token's expiry, removes it and closes the connections still authenticated with it, as
  Azure does. Both clients connect directly (no proxy), with go-redis's default options.
- 1 and 2 are Go benchmarks (ns/op, B/op, allocs/op, plus the process's CPU time per op). Each run
  is a separate process; the runs alternate which client goes first. BenchmarkInterleaved runs both
  clients in turns of 200 operations within one benchmark: its ratio is the one held to the target.
  It runs at the floor go-redis (go.mod's) and again at the newest (a copy of the module with
  go-redis upgraded, built with -tags goredis_newest).
- 2b: BenchmarkFullDuplex, newest go-redis only (the option is v9.23+), with -benchtime Nx: N
  turns, each client running one chunk of 2,000 (1 goroutine), 8,000 (16) or 16,000 (64)
  commands a turn from its own long-lived goroutines; the order of the four clients is rotated
  every other turn and reversed on the others. The machine has 2 cores shared with other work:
  compare ratios within a run, not ns/op across runs.
- 3: 32 goroutines send GETs for 6 s per client (plain, entraredis, and go-redis's own streaming
  renewal for comparison). Rotation events are: a new token, a token's
  expiry, a connection retired by the guard, a new connection. An operation overlapping the 250 ms
  after an event counts as "rotation", the others as "steady". plain go-redis runs the same
  scenario while a provider rotates tokens on the same server: its ratio is the noise floor. With
  32 goroutines on few cores, p99 is mostly CPU scheduling (multiples of the kernel's tick): compare
  the control rows and the max columns too.
- 4: the identity endpoint is a counting credential (entratest's issuer). Its answers say the
  token expires 200 ms later (exp claims are whole seconds, too coarse). The fleet runs Azure's
  defaults (60 min tokens, refresh 5 min before expiry minus up to 1 min of jitter) with time
  scaled 1:300, so a 1 s window is 3.3 ms; tokens are minted beforehand so that signing costs no
  CPU during the measurement.
- 5: heap (after two GCs, workers paused) and goroutines (lowest of 10 samples over 100 ms)
  after 10, 500 and 1,000 rotations of 100 ms tokens (as the client sees them; their exp claims are
  2-3 s away, so the guard tracks and renews them). The server's ACL user accepts any password, so
  that nothing of the test rig grows with the tokens (acltest.Env keeps every token it mints).
- 6: entratest's issuer is the credential (its fault injection answers HTTP 500 from before the
  token, 2 s long, expires until 3 s past its exp claim); the client is entraredis.NewClient on
  entratest's Entra gateway (plain TCP) in front of a redis-server, go-redis's default options.
  Credential calls are counted by a wrapper, dials by the hook (Stats().Dials) and the gateway
  (accepted connections). Recovery: from the end of the fault to the first INCR that succeeds.
- 7 and 8 run against entratest's Entra gateway serving TLS (a test CA) in front of a
  redis-server: it closes a connection when the token that last authenticated it expires, and runs
  an AUTH queued behind a blocked command only when that command returns, as Redis and Azure do.
  Tokens live 3 s (exp claims in whole seconds); the provider refreshes at half to three quarters
  of their life. Raw dials are counted by the client's Dialer: every connection go-redis opens.
- 7: the pool is warmed with one 50 ms BLPOP per connection at once, then idle until the provider
  has cached 3 more tokens and the last token before them has expired at the gateway (about 8 s);
  "first GET" is the latency of the GETs sent on every connection at once afterwards.
- 8: both clients run in the same process at once, on their own keys; each tick of the producer
  pushes to both, the order alternating. The consumers are blocked (INFO clients) before it
  starts, since XREAD from $ sees only later entries; after 10 s of producing, the run waits until
  every element is consumed, then stops the consumers with a "stop" element each. A split is a blocking command the hook sent
  again as a further, shorter block because its previous block ended before the token's end.
`)
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

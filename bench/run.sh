#!/usr/bin/env bash
# make bench: run bench/'s benchmarks against a real redis-server on loopback and write
# BENCHMARKS.md. The side-by-side benchmarks (plain go-redis and entraredis) run in separate
# processes, alternating which side goes first (BENCH_REVERSE), and benchstat summarises the ns/op
# ones; the scenario benchmarks (one run = one scenario) are summarised by bench/cmd/benchreport.
# Then the commands again and the full-duplex rows (BenchmarkFullDuplex) at the newest go-redis:
# in a copy of the module with go-redis upgraded to BENCH_GOREDIS_NEWEST, built with
# -tags goredis_newest. About 12 minutes on 2 cores.
#
# Environment: GO (default go), BENCH_OUT (default BENCHMARKS.md), BENCH_COUNT (runs of the
# ns/op benchmarks, half a second each; default 8), BENCH_SCENARIO_COUNT (runs of the latency and
# identity scenarios; default 3), BENCH_CONN_COUNT (runs of the idle-pool and blocking-consumer
# scenarios, about 35 and 25 s a run; default 3), BENCH_ROTATIONS (of the memory scenario; default 1000),
# BENCH_GOREDIS_NEWEST (default v9.24.0; "none" skips the newest part), BENCH_FD_COUNT (runs of
# the full-duplex benchmark; default 3), BENCH_FD_TURNS (turns per run; default 12),
# BENCH_KEEP (a directory to keep the raw output in).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
OUT=${BENCH_OUT:-BENCHMARKS.md}
COUNT=${BENCH_COUNT:-8}
SCOUNT=${BENCH_SCENARIO_COUNT:-3}
CCOUNT=${BENCH_CONN_COUNT:-3}
NEWEST=${BENCH_GOREDIS_NEWEST:-v9.24.0}
FDCOUNT=${BENCH_FD_COUNT:-3}
FDTURNS=${BENCH_FD_TURNS:-12}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da # golang.org/x/perf, pinned for reproducible tables

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/raw" "$work/stat" "$work/stderr" "$work/bin"
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

echo "bench: compiling" >&2
$GO test -c -o "$work/bench.test" ./bench

echo "bench: installing benchstat $BENCHSTAT_VERSION" >&2
if ! GOBIN="$work/bin" $GO install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION" >&2; then
	echo "bench: benchstat could not be installed: BENCHMARKS.md will have the raw figures only" >&2
fi

status=0
# run FILE REVERSE ARGS...: one run of the test binary (BIN, default bench.test), its output
# appended to raw/FILE.
run() {
	local file=$1 reverse=$2
	shift 2
	if ! (cd "$work" && BENCH_REVERSE=$reverse "./${BIN:-bench.test}" -test.run '^$' "$@" >>"raw/$file" 2>>"stderr/$file"); then
		echo "bench: a run of $* failed: see $file in BENCHMARKS.md" >&2
		status=1
	fi
}

for i in $(seq 1 "$COUNT"); do
	echo "bench: credentials and commands, run $i/$COUNT" >&2
	run commands.txt $(((i + 1) % 2)) -test.bench '^Benchmark(Credentials|Commands|Interleaved)$' -test.benchmem -test.benchtime 500ms -test.count 1
done
floorv=$($GO list -m -f '{{.Version}}' github.com/redis/go-redis/v9)
newestv=
if [ "$NEWEST" != none ]; then
	echo "bench: compiling at go-redis $NEWEST (a copy of the module)" >&2
	mkdir "$work/newest"
	tar --exclude=./.git -cf - . | tar -xf - -C "$work/newest"
	if (cd "$work/newest" && $GO get "github.com/redis/go-redis/v9@$NEWEST" >&2 && $GO mod tidy >&2 &&
		$GO test -c -tags goredis_newest -o "$work/bench-newest.test" ./bench >&2); then
		newestv=$(cd "$work/newest" && $GO list -m -f '{{.Version}}' github.com/redis/go-redis/v9)
		for i in $(seq 1 "$COUNT"); do
			echo "bench: commands at go-redis $newestv, run $i/$COUNT" >&2
			BIN=bench-newest.test run commands-newest.txt $(((i + 1) % 2)) -test.bench '^BenchmarkInterleaved$' -test.benchtime 500ms -test.count 1
		done
		for i in $(seq 1 "$FDCOUNT"); do
			echo "bench: full duplex at go-redis $newestv, run $i/$FDCOUNT" >&2
			BIN=bench-newest.test run fullduplex.txt 0 -test.bench '^BenchmarkFullDuplex$' -test.benchtime "${FDTURNS}x" -test.count 1
		done
	else
		echo "bench: the newest go-redis could not be built: no newest rows" >&2
		status=1
	fi
fi
for i in $(seq 1 "$SCOUNT"); do
	echo "bench: rotation latency, run $i/$SCOUNT" >&2
	run rotation.txt $(((i + 1) % 2)) -test.bench '^BenchmarkRotationLatency$' -test.benchtime 1x -test.count 1
done
echo "bench: identity load and fleet" >&2
run identity.txt 0 -test.bench '^BenchmarkIdentityLoad$' -test.benchtime 1x -test.count "$SCOUNT"
run identity.txt 0 -test.bench '^BenchmarkFleet$' -test.benchtime 1x -test.count 1
echo "bench: identity provider outage past expiry" >&2
run outage.txt 0 -test.bench '^BenchmarkOutage$' -test.benchtime 1x -test.count 1
for i in $(seq 1 "$CCOUNT"); do
	echo "bench: idle pool and blocking consumers through rotations, run $i/$CCOUNT" >&2
	run idle.txt $(((i + 1) % 2)) -test.bench '^BenchmarkIdlePool$' -test.benchtime 1x -test.count 1
	run blocking.txt 0 -test.bench '^BenchmarkBlockingConsumers$' -test.benchtime 1x -test.count 1
done
echo "bench: memory through 1,000 rotations" >&2
run memory.txt 0 -test.bench '^BenchmarkRotationMemory$' -test.benchtime 1x -test.count 1

if [ -x "$work/bin/benchstat" ]; then
	bs="$work/bin/benchstat"
	# BenchmarkInterleaved has both clients in one benchmark: benchreport tabulates it.
	grep -v '^BenchmarkInterleaved' "$work/raw/commands.txt" >"$work/raw/separate.txt" || true
	$bs -col /client "$work/raw/separate.txt" >"$work/stat/commands.txt" 2>&1 || true
fi

$GO run ./bench/cmd/benchreport \
	-raw "$work/raw" -stat "$work/stat" -stderr "$work/stderr" \
	-start "$start" -seconds $(($(date +%s) - t0)) -load-start "$load0" \
	-goredis-floor "$floorv" -goredis-newest "$newestv" \
	-command "make bench (bench/run.sh: BENCH_COUNT=$COUNT BENCH_SCENARIO_COUNT=$SCOUNT BENCH_CONN_COUNT=$CCOUNT BENCH_GOREDIS_NEWEST=$NEWEST BENCH_FD_COUNT=$FDCOUNT BENCH_FD_TURNS=$FDTURNS)" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
if [ -n "${BENCH_KEEP:-}" ]; then
	mkdir -p "$BENCH_KEEP" && cp -r "$work/raw" "$work/stat" "$work/stderr" "$BENCH_KEEP/"
fi
echo "bench: wrote $OUT in $(($(date +%s) - t0)) s" >&2
exit $status

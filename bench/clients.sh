#!/usr/bin/env bash
# make bench, second part: the rueidis and valkey-go rows (nested modules rueidisentra/ and
# valkeyentra/): each client with a static password next to the same client through NewClient, on
# one real redis-server that checks tokens through its ACL, and the cost of AuthCredentialsFn.
# Appends a section to BENCHMARKS.md (run after bench/run.sh, which writes it). About 1 minute.
#
# Environment: GO (default go), BENCH_OUT (default BENCHMARKS.md), BENCH_COUNT (runs, half a
# second per benchmark; default 8).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
OUT=${BENCH_OUT:-BENCHMARKS.md}
COUNT=${BENCH_COUNT:-8}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da # as bench/run.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
GOBIN="$work" $GO install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION" >&2 || true

{
	echo
	echo "## rueidis and valkey-go"
	echo
	echo "\`make bench\` (bench/clients.sh, BENCH_COUNT=$COUNT), $(date -u +%Y-%m-%dT%H:%M:%SZ). Each client with a static"
	echo "password (client=static) next to the same client through NewClient (Entra ID tokens from a"
	echo "provider), on one redis-server checking the tokens through its ACL; AuthCredentialsFn: one call"
	echo "with a token cached (each connection calls it once per token)."
} >>"$OUT"
for m in rueidisentra valkeyentra; do
	echo "bench: $m" >&2
	(cd "$m" && $GO test -run '^$' -bench '^Benchmark(Commands|AuthCredentialsFn)$' -benchmem -benchtime 500ms -count "$COUNT" .) >"$work/$m.txt"
	# The client measured, as its module resolves it (go-redis plays no part here).
	mod=github.com/redis/rueidis
	[ "$m" = valkeyentra ] && mod=github.com/valkey-io/valkey-go
	client=$(cd "$m" && $GO list -m -f '{{.Path}} {{.Version}}' "$mod" 2>/dev/null || true)
	{
		echo
		echo "### $m"
		echo
		echo "Measured with ${client:-unknown}."
		echo
		echo '```'
		if [ -x "$work/benchstat" ]; then
			grep -v '^BenchmarkAuthCredentialsFn' "$work/$m.txt" | "$work/benchstat" -col /client - || true
			grep '^BenchmarkAuthCredentialsFn\|^goos\|^goarch\|^pkg\|^cpu' "$work/$m.txt" | "$work/benchstat" - || true
		else
			cat "$work/$m.txt"
		fi
		echo '```'
	} >>"$OUT"
done
echo "bench: appended the rueidis and valkey-go rows to $OUT" >&2

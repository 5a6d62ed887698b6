#!/usr/bin/env bash
# mutate.sh: measures the suite's strength. It applies each small source mutation of a list, one
# at a time, runs the tests named for it, puts the file back, and prints which mutations survive
# (no named test failed). Run it with `make mutate`; it is not part of `make test`.
#
#   .ci/mutate.sh [list]            list: default .ci/mutations.txt (its header says the format)
#
# Environment:
#   MUTATE_ONLY=regex    only the mutations whose name matches (grep -E)
#   MUTATE_FLAGS=...     go test flags; default "-count=1" (add -race to also catch races)
#   MUTATE_TIMEOUT=...   go test -timeout per run; default 300s
#   MUTATE_BASELINE=0    skip the check that each named test passes without mutation
#   GO=...               the go command; default go
#
# Statuses: KILLED (a named test failed: good), SURVIVED (all passed: the suite misses the bug),
# NOT APPLIED (the old text is not in the file exactly once: the code moved on, update the list),
# BUILD FAILED (the mutation does not compile: fix the list), NO TESTS (a regex matched nothing),
# BASELINE FAILED (a named test fails without the mutation: its verdict means nothing).
# The exit status is 0 only when every mutation was KILLED.
#
# The mutated file is always put back: on exit, on Ctrl-C, on TERM. A copy of the original waits in
# .ci/.mutate-backup while a mutation is applied; if a run was killed with -9, the next run restores
# it first.
set -u
cd "$(dirname "$0")/.."
list=${1:-.ci/mutations.txt}
GO=${GO:-go}
flags=${MUTATE_FLAGS:--count=1}
timeout=${MUTATE_TIMEOUT:-300s}
only=${MUTATE_ONLY:-}
baseline=${MUTATE_BASELINE:-1}
backup=.ci/.mutate-backup
logs=$(mktemp -d)

restore() {
	if [ -f "$backup/path" ]; then
		local f
		f=$(cat "$backup/path")
		cp -p "$backup/original" "$f" && rm -f "$backup/original" "$backup/path"
	fi
}
# Each go test runs in its own process group, in the background, so that a signal reaches the
# traps at once (not after the run) and they can end the run whole before putting the file back.
set -m
child=""
stop() {
	if [ -n "$child" ]; then
		kill -TERM -- "-$child" 2>/dev/null
		wait "$child" 2>/dev/null
	fi
	restore
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM HUP
trap 'restore; rm -rf "$logs"; rmdir "$backup" 2>/dev/null' EXIT

mkdir -p "$backup"
if [ -f "$backup/path" ]; then
	echo "mutate: $(cat "$backup/path") was left mutated by an interrupted run: restored" >&2
	restore
fi

# Parse the list into parallel arrays: one entry per mutation.
names=() files=() olds=() news=() tests=()
flush() {
	if [ -n "${m_name:-}" ]; then
		names+=("$m_name") files+=("$m_file") olds+=("$m_old") news+=("$m_new") tests+=("$m_tests")
	fi
	m_name="" m_file="" m_old="" m_new="" m_tests=""
}
m_name="" m_file="" m_old="" m_new="" m_tests=""
while IFS= read -r line || [ -n "$line" ]; do
	case "$line" in
	'#'*) continue ;;
	'') flush; continue ;;
	esac
	key=${line%%:*}
	val=${line#*: }
	case "$key" in
	name) m_name=$val ;;
	file) m_file=$val ;;
	old) m_old=$val ;;
	new) m_new=$val ;;
	test) m_tests+="$val"$'\n' ;;
	*) echo "mutate: $list: unknown line: $line" >&2; exit 2 ;;
	esac
done <"$list"
flush

# count prints how many times $2 occurs in the text $1.
count() {
	local s=$1 n=0
	while [[ $s == *"$2"* ]]; do
		n=$((n + 1))
		s=${s#*"$2"}
	done
	echo "$n"
}

# run_tests runs one "package regex" line; sets result to the status word and the failing test,
# if any.
run_tests() {
	local pkg=${1%% *} re=${1#* } out=$2 rc
	# shellcheck disable=SC2086
	$GO test $flags -p 1 -timeout "$timeout" -run "$re" "$pkg" >"$out" 2>&1 &
	child=$!
	wait "$child"
	rc=$?
	child=""
	if grep -qE '\[(build|setup) failed\]|^# ' "$out" && [ $rc -ne 0 ]; then
		result="BUILD"
	elif [ $rc -ne 0 ]; then
		result="FAIL $(grep -m1 -oE -- '--- FAIL: [^ ]+ \([0-9.]+s\)' "$out" | sed 's/--- FAIL: //')"
	elif grep -q 'no tests to run' "$out"; then
		result="NOTESTS"
	else
		result="PASS"
	fi
}

declare -A base_ok
results=()
worst=0
total=${#names[@]}
for i in "${!names[@]}"; do
	name=${names[$i]} file=${files[$i]} old=${olds[$i]} new=${news[$i]}
	if [ -n "$only" ] && ! grep -qE -- "$only" <<<"$name"; then
		continue
	fi
	mapfile -t tl < <(printf '%s' "${tests[$i]}")
	echo "== [$((i + 1))/$total] $name ($file)" >&2
	status="" detail="" secs=0

	if [ ! -f "$file" ]; then
		status="NOT APPLIED" detail="no file $file"
	else
		content=$(cat "$file"; printf x)
		content=${content%x}
		n=$(count "$content" "$old")
		if [ "$n" -ne 1 ]; then
			status="NOT APPLIED" detail="old text found $n times in $file (want exactly 1)"
		fi
	fi
	if [ -z "$status" ] && [ "$baseline" != 0 ]; then
		for tline in "${tl[@]}"; do
			if [ -z "${base_ok[$tline]:-}" ]; then
				run_tests "$tline" "$logs/base"
				r=$result
				base_ok[$tline]=$r
				[ "$r" = PASS ] || cp "$logs/base" "$logs/base-$i.log"
			fi
			if [ "${base_ok[$tline]}" != PASS ]; then
				status="BASELINE FAILED" detail="$tline: ${base_ok[$tline]} without the mutation (log: go test -run in that package)"
				break
			fi
		done
	fi
	if [ -z "$status" ]; then
		cp -p "$file" "$backup/original" && printf '%s' "$file" >"$backup/path"
		printf '%s' "${content/"$old"/"$new"}" >"$file"
		start=$(date +%s)
		status="SURVIVED" detail="${#tl[@]} test run(s) passed"
		for tline in "${tl[@]}"; do
			run_tests "$tline" "$logs/run"
			r=$result
			case "$r" in
			FAIL*) status="KILLED" detail="$tline: ${r#FAIL }"; break ;;
			BUILD) status="BUILD FAILED" detail="$(grep -m3 -E '\.go:[0-9]+' "$logs/run" | tr '\n' ' ')"; break ;;
			NOTESTS) status="NO TESTS" detail="$tline matched no test"; break ;;
			esac
		done
		secs=$(($(date +%s) - start))
		restore
		if ! cmp -s <(printf '%s' "$content") "$file"; then
			echo "mutate: $file differs from its original after restoring: stopping" >&2
			exit 3
		fi
	fi
	[ "$status" = KILLED ] || worst=1
	echo "   $status (${secs}s): $detail" >&2
	results+=("$(printf '%-15s %4ss  %s  [%s]' "$status" "$secs" "$name" "$detail")")
done

echo
echo "mutation check: ${#results[@]} mutations ($list, go test $flags)"
printf '%s\n' "${results[@]}"
killed=$(printf '%s\n' "${results[@]}" | grep -c '^KILLED')
echo "killed ${killed} of ${#results[@]}"
exit $worst

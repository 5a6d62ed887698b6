# make test: install what the tests need when it is missing, then vet and run every test with -race.
GO ?= go

.PHONY: test deps vet fuzz bench mutate

test: deps vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

# redis-server is the only thing outside Go the tests need (a real server on a loopback port).
deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	    systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true; \
	  else \
	    echo "redis-server is missing: install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run make test again" >&2; \
	    exit 1; \
	  fi; \
	fi

# A minute per target, one worker each (the RESP ones: the codec, its scanners, and the emulator's
# reader against the codec).
fuzz:
	$(GO) test ./jwtutil -run '^$$' -fuzz FuzzParseClaims -fuzztime 60s
	for f in FuzzFrameLen FuzzReplyScanner FuzzRequestScanner FuzzSplitArgs; do \
	  $(GO) test ./internal/resp -run '^$$' -fuzz "^$$f\$$" -fuzztime 60s -parallel 1 || exit 1; done
	for f in FuzzReplyAgainstCodec FuzzCommandAgainstCodec; do \
	  $(GO) test ./entratest -run '^$$' -fuzz "^$$f\$$" -fuzztime 60s -parallel 1 || exit 1; done

# Benchmarks against a real redis-server, side by side with plain go-redis; writes BENCHMARKS.md
# (about 8 minutes; needs the Go module proxy once, for benchstat).
bench: deps
	GO=$(GO) bash bench/run.sh

# The suite's strength, measured: each mutation of .ci/mutations.txt applied alone, its named tests
# run, the file put back; prints which survive (about 7 minutes; not part of make test).
# MUTATE_ONLY=regex runs some; MUTATE_FLAGS="-race -count=1" adds the race detector.
mutate: deps
	GO=$(GO) bash .ci/mutate.sh

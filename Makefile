# make test: install what the tests need when it is missing, then vet and run every test with -race,
# of this module and of the nested ones (their own go.mod, so that go-redis users never download
# rueidis or valkey-go).
GO ?= go
MODULES = rueidisentra valkeyentra

.PHONY: test deps vet fuzz bench

test: deps vet
	$(GO) test -race -count=1 ./...
	for m in $(MODULES); do (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; done

vet:
	$(GO) vet ./...
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

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
# (about 8 minutes; needs the Go module proxy once, for benchstat); then the rueidis and valkey-go
# rows (bench/clients.sh, about a minute).
bench: deps
	GO=$(GO) bash bench/run.sh
	GO=$(GO) bash bench/clients.sh

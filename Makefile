# make test: install what the tests need when it is missing, then vet; every test with -race at
# go.mod's versions, which are the oldest go-redis, azcore and azidentity the library supports
# (test-floor); the two nested modules at theirs, side by side (test-modules); then the packages
# that import go-redis again at the newest releases (test-newest). One pass after the other, so
# that at most two -race test binaries run at once, as go test ./... runs them on 2 cores: with
# all passes at once (five binaries), the 3 s-token tests were starved into failures the code does
# not have (moves and renewals that had 0.5 s left took longer; gateways closed them at expiry). go test -short ./... is the edit loop: it skips the slow tests.
# The nested modules (rueidisentra, valkeyentra: their own go.mod, so that go-redis users never
# download rueidis or valkey-go) are vetted and tested in test-modules.
GO ?= go
MODULES = rueidisentra valkeyentra

# The modules whose newest releases test-newest takes (redisotel follows go-redis).
NEWEST = github.com/redis/go-redis/v9@latest github.com/redis/go-redis/extra/redisotel/v9@latest \
	github.com/Azure/azure-sdk-for-go/sdk/azcore@latest github.com/Azure/azure-sdk-for-go/sdk/azidentity@latest

# The packages whose own files (tests included) import go-redis: the ones test-newest runs.
GOREDIS_PKGS = $(GO) list -tags goredis_newest -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | \
	awk '/ github.com\/redis\/go-redis/ {print $$1}'

.PHONY: test test-floor test-modules test-newest test-go-floor deps vet fuzz bench mutate

test: deps
	@start=$$(date +%s); $(MAKE) --no-print-directory vet test-floor && \
	  $(MAKE) --no-print-directory test-modules && \
	  $(MAKE) --no-print-directory test-newest && \
	  echo "make test: passed in $$(( $$(date +%s) - start )) s"

vet:
	$(GO) vet ./...

test-floor:
	$(GO) test -race -count=1 ./...

# Each nested module: vet and every test, at its go.mod's versions; the two side by side.
test-modules:
	@$(MAKE) --no-print-directory -j 2 --output-sync=target $(addprefix test-module-,$(MODULES))

test-module-%:
	cd $* && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# In a temporary copy of the module (the working tree, uncommitted changes included): go get the
# newest releases, then vet everything and test the packages that import go-redis with
# -tags goredis_newest, which adds the tests of go-redis features newer than the floor (files
# *_newest_test.go). The other packages do not change with go-redis. Needs the Go module proxy.
test-newest:
	@dir=$$(mktemp -d); trap 'chmod -R u+w "$$dir"; rm -rf "$$dir"' EXIT; \
	  tar --exclude=./.git -cf - . | tar -xf - -C "$$dir" && cd "$$dir" && \
	  $(GO) get $(NEWEST) && $(GO) mod tidy && \
	  echo "newest: $$($(GO) list -m github.com/redis/go-redis/v9 github.com/Azure/azure-sdk-for-go/sdk/azcore github.com/Azure/azure-sdk-for-go/sdk/azidentity | tr '\n' ' ')" && \
	  $(GO) vet -tags goredis_newest ./... && \
	  $(GO) test -race -count=1 -tags goredis_newest $$($(GOREDIS_PKGS))

# The oldest Go that go.mod's go line allows, fetched through the module proxy (GOTOOLCHAIN):
# build, vet and the short tests. Not part of make test.
test-go-floor:
	GOTOOLCHAIN=go$$(sed -n 's/^go //p' go.mod) $(GO) vet ./...
	GOTOOLCHAIN=go$$(sed -n 's/^go //p' go.mod) $(GO) test -race -short -count=1 ./...

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
	for f in FuzzFrameLen FuzzReplyScanner FuzzRequestScanner FuzzSplitArgs FuzzRequestLen FuzzReplies FuzzOne; do \
	  $(GO) test ./internal/resp -run '^$$' -fuzz "^$$f\$$" -fuzztime 60s -parallel 1 || exit 1; done
	$(GO) test -race -timeout 30m -run '^TestGuardModel$$' ./hook -args -guard.model 60s
	for f in FuzzReplyAgainstCodec FuzzCommandAgainstCodec; do \
	  $(GO) test ./entratest -run '^$$' -fuzz "^$$f\$$" -fuzztime 60s -parallel 1 || exit 1; done

# Benchmarks against a real redis-server, side by side with plain go-redis; writes BENCHMARKS.md
# (about 8 minutes; needs the Go module proxy once, for benchstat); then the rueidis and valkey-go
# rows (bench/clients.sh, about a minute).
bench: deps
	GO=$(GO) bash bench/run.sh
	GO=$(GO) bash bench/clients.sh

# The suite's strength, measured: each mutation of .ci/mutations.txt applied alone, its named tests
# run, the file put back; prints which survive (about 7 minutes; not part of make test).
# MUTATE_ONLY=regex runs some; MUTATE_FLAGS="-race -count=1" adds the race detector.
mutate: deps
	GO=$(GO) bash .ci/mutate.sh

# Switchboard's build and test entry points. `make test` is what CI runs.
GO                  ?= go
BIN                 := $(CURDIR)/.bin
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := $(BIN)/staticcheck-$(STATICCHECK_VERSION)

.PHONY: test fmt-check vet staticcheck unit demo services fuzz

## test: gofmt check, go vet, staticcheck, and every test with the race
## detector against the real servers (see scripts/services.sh).
test: fmt-check vet staticcheck unit

fmt-check:
	@out="$$(gofmt -l $$(find . -name '*.go' -not -path './.bin/*'))"; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

$(STATICCHECK):
	mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(BIN)/staticcheck $@

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

unit:
	scripts/services.sh check
	$(GO) test -race -count=1 -timeout 30m ./...

## fuzz: run every Fuzz target for FUZZTIME each (their seeds already run
## under `make test`, as ordinary tests). New crashers land in testdata/fuzz.
FUZZTIME ?= 15s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## demo: the seed's scenario in one process (SWITCHBOARD_BRIDGE picks the backend).
demo:
	$(GO) run ./examples/monolith

## services: start the local PostgreSQL, RabbitMQ and NATS the tests use.
services:
	scripts/services.sh start

.PHONY: bench bench-quick

## bench: Switchboard side by side with hand-written Watermill (its docs'
## defaults, and tuned variants as <figure>@<variant>) and with the broker
## clients alone (<backend>/ceiling-*), every backend that is reachable, one
## process run (about 10 minutes; the servers of `make test`). Figures:
## <figure> <switchboard> <raw-watermill> <ratio> <unit> [<sb>/<raw> of the
## ceiling], ratio > 1 when Switchboard is better; and durable workflows'
## per-step overhead next to its floor (one bare commit), runs/s and database
## round trips (PostgreSQL). See BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench BenchmarkInvoke -benchmem -count 1 ./engine/
	$(GO) test -run '^$$' -bench . -benchtime 3s -count 1 ./workflow/
	$(GO) run ./internal/bench

## bench-quick: fewer, shorter figures in under a minute: a smoke check.
bench-quick:
	$(GO) run ./internal/bench -quick

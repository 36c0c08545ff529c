# Gatehouse — the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
CMDS  := gateway controlplane sampleapi deliverer
# Short fuzz runs inside `make test`; longer ones: make fuzz FUZZTIME=5m
FUZZTIME ?= 10s

.PHONY: run test test-deps services services-stop build gateway bench chaos fuzz vet lint clean

## run: start services, migrate, build and start the four processes, seed a demo org
run: build
	@scripts/run.sh

## test: the whole suite against real Postgres, Redis and Kafka (starts them)
test: services test-deps vet
	$(GO) test -count=1 -timeout 15m -p 2 ./...
	@$(MAKE) --no-print-directory fuzz FUZZPKGS=./internal/...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

## lint: staticcheck (fetched by the go command; not part of `make test`)
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 ./...

## fuzz: a short run of every fuzz target (seed corpora live in testdata/fuzz).
## `make test` fuzzes ./internal/... (keys, redaction, SSRF, signatures); the
## Caddy-linked targets (directive parsers, credentials, Idempotency-Key) cost
## minutes of instrumented build each, so their seeds run in the normal suite
## and `make fuzz` runs them all.
FUZZPKGS ?= ./...
fuzz:
	@set -e; for pkg in $$($(GO) list $(FUZZPKGS)); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  grep -qs '^func Fuzz' "$$dir"/*_test.go || continue; \
	  list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$list"; exit 1; }; \
	  for f in $$(echo "$$list" | grep '^Fuzz' || true); do \
	    echo "==> fuzz $$pkg $$f ($(FUZZTIME))"; \
	    log=$$(mktemp); \
	    if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then \
	      grep -v '^fuzz: elapsed' $$log; \
	      echo "==> fuzz $$f failed; once more (a real crasher is saved under testdata/fuzz and fails again)"; \
	      $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1 || { grep -v '^fuzz: elapsed' $$log; rm -f $$log; exit 1; }; \
	    fi; \
	    rm -f $$log; \
	  done; \
	done

## services / services-stop: Postgres, Redis and Kafka alone
services:
	@scripts/services.sh start

services-stop:
	@scripts/services.sh stop

## build: the four binaries into bin/ (the gateway with `go build`, same modules as xcaddy)
build:
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

## gateway: the custom Caddy binary built by xcaddy from xcaddy.json
gateway:
	@scripts/xcaddy-build.sh $(BIN)/gateway-xcaddy

## bench: benchmarks (never part of `make test`); results in bench/results/
bench: services build
	@scripts/bench.sh

## chaos: scripted faults under load, with invariants checked
chaos: services build
	@scripts/chaos.sh

clean:
	rm -rf $(BIN)

test-deps:
	@scripts/test-deps.sh

# Mayu: make help lists the targets.
SHELL := /bin/bash
VERSION ?= $(shell cat VERSION 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GO      ?= go
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
# pkg: the libraries; mayu, mayuctl: the shipped binaries; tools: the load
# tools (bootstorm, stormbench); tests: the daemon-level network tests.
MODULES := pkg mayu mayuctl tools tests
# Each mk/*.mk fragment may add targets to these lists.
TEST_TARGETS :=
LINT_TARGETS :=

.DEFAULT_GOAL := help

-include mk/*.mk

.PHONY: deps
deps: ## install the Debian packages the sandbox and the tests use (.ci/packages; root)
	scripts/install-deps

# The sandbox is the newcomer's first command: install what it needs first.
sandbox: deps

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "} {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: bin/mayu bin/mayuctl bin/infopusher bin/arm64/infopusher bin/arm64/mayuctl ## build static bin/mayu, bin/mayuctl, bin/infopusher (and the arm64 infopusher, mayuctl for arm64 machines)

bin/mayu: FORCE
	$(GOBUILD) -o $@ ./mayu
bin/mayuctl: FORCE
	$(GOBUILD) -o $@ ./mayuctl
bin/infopusher: FORCE
	$(GOBUILD) -o $@ ./mayuctl/cmd/infopusher
# What arm64 machines run (network.arm64): served as static_html/arm64/.
bin/arm64/infopusher: FORCE
	GOARCH=arm64 $(GOBUILD) -o $@ ./mayuctl/cmd/infopusher
bin/arm64/mayuctl: FORCE
	GOARCH=arm64 $(GOBUILD) -o $@ ./mayuctl

.PHONY: FORCE
FORCE:

.PHONY: test
test: test-unit $(TEST_TARGETS) ## run every test level (unit, process, network, machine)

.PHONY: test-unit
test-unit: build ## go test -race in every module
	@set -e; for m in $(MODULES); do echo "== go test $$m"; (cd $$m && $(GO) test -race -count=1 -timeout 15m ./...); done

.PHONY: bench
bench: ## run the Go benchmarks
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...); done

.PHONY: lint
lint: $(LINT_TARGETS) ## gofmt, go vet (nettest files too), go mod tidy check
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet -tags nettest ./...); done
	@set -e; for m in $(MODULES); do (cd $$m && cp go.mod /tmp/go.mod.$$m && cp go.sum /tmp/go.sum.$$m && $(GO) mod tidy && \
	  if ! diff -q go.mod /tmp/go.mod.$$m >/dev/null || ! diff -q go.sum /tmp/go.sum.$$m >/dev/null; then \
	    cp /tmp/go.mod.$$m go.mod; cp /tmp/go.sum.$$m go.sum; echo "go mod tidy changes $$m/go.mod"; exit 1; fi); done

.PHONY: clean
clean: ## remove build output
	rm -rf bin dist

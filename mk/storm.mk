# Boot storms: the load generator (bin/bootstorm), the benchmark driver
# behind docs/PERFORMANCE.md (bin/stormbench), both in the tools module
# (tools/), and the fuzz runs of the API. The crash-safety and bad-input
# tests of the real binary live in
# mayu/crash_test.go and mayu/storm_test.go and run with `make test-unit`.

FUZZTIME ?= 10s
# Extra flags for `make storm` (bootstorm's, e.g. -machines 2000 -concurrency 32)
# and STORM_URL to storm an already running mayu instead of a fresh one.
STORM_ARGS ?=
STORM_URL ?=
# Where `make bench-storm` writes its JSON figures.
STORM_OUT ?= dist/bench-storm.json
STORM_BENCH_ARGS ?=

TEST_TARGETS += test-fuzz-api

bin/bootstorm: FORCE
	$(GOBUILD) -o $@ ./tools/bootstorm
bin/stormbench: FORCE
	$(GOBUILD) -o $@ ./tools/stormbench

.PHONY: storm
storm: bin/mayu bin/bootstorm bin/stormbench ## boot storm against a fresh loopback mayu (or STORM_URL=...; STORM_ARGS=...)
	@if [ -n "$(STORM_URL)" ]; then \
	  bin/bootstorm -url "$(STORM_URL)" $(STORM_ARGS); \
	else \
	  bin/stormbench -mayu bin/mayu -repo . -quick $(STORM_ARGS); \
	fi

# Machines of each full-stack storm (`make storm-pxe`): DHCP, TFTP, iPXE,
# HTTP, ignored DHCP through real dnsmasq in namespaces of its own (root,
# busybox). `make bench-storm` runs them at 500 and 2,000.
PXE_MACHINES ?= 500,2000

.PHONY: storm-pxe
storm-pxe: bin/mayu bin/stormbench ## full-stack storms of PXE_MACHINES (500,2000) machines through real dnsmasq (root)
	bin/stormbench -mayu bin/mayu -repo . -pxe-only -pxe $(PXE_MACHINES)

.PHONY: bench-storm
bench-storm: bin/mayu bin/stormbench ## every figure of docs/PERFORMANCE.md (long: tens of minutes; root for the dnsmasq and full-stack parts; needs nginx-light)
	@mkdir -p $(dir $(STORM_OUT))
	bin/stormbench -mayu bin/mayu -repo . -out $(STORM_OUT) $(STORM_BENCH_ARGS)

.PHONY: test-fuzz-api
test-fuzz-api: ## fuzz every API target for FUZZTIME (10s) each
	@set -e; cd pkg; targets=$$($(GO) test -list '^Fuzz' ./api/ | grep '^Fuzz'); \
	for t in $$targets; do echo "== fuzz $$t for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s ./api/; done

# The git-backed cluster directory (pkg/store): its benchmarks and the
# serial fuzz target. Its tests run in test-unit.

.PHONY: bench-store fuzz-serial
bench-store: ## store create/update cost at 10, 1,000, 10,000 hosts, git on and off
	cd pkg && $(GO) test -run '^$$' -bench 'Get|Update|Create' -benchtime 200x -benchmem -timeout 30m ./store/gitdir/
	cd pkg && $(GO) test -run '^$$' -bench 'Open' -benchtime 3x -benchmem -timeout 30m ./store/gitdir/

fuzz-serial: ## fuzz host.NormalizeSerial for 60s
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzNormalizeSerial$$' -fuzztime 60s ./host/

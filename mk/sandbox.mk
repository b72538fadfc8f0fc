# The PXE sandbox (scripts/sandbox) and its acceptance test (tests/e2e):
# mayu, real dnsmasq and qemu machines in a network namespace of their own.
SANDBOX_NODES ?= 3

TEST_TARGETS += e2e
LINT_TARGETS += lint-sandbox

.PHONY: sandbox sandbox-down sandbox-status sandbox-assets e2e lint-sandbox
sandbox: build ## PXE sandbox: mayu + $(SANDBOX_NODES) qemu nodes install and report "running"; stays up (root)
	scripts/sandbox up $(SANDBOX_NODES)

sandbox-status: ## where the sandbox's nodes are, and mayuctl list
	scripts/sandbox status

sandbox-down: ## stop the sandbox (processes by PID) and remove its namespace
	scripts/sandbox down

sandbox-assets: build ## build the stand-in OS assets into .sandbox/assets
	scripts/build-sandbox-assets

e2e: build bin/bootstorm ## acceptance test: the sandbox's flavours (cloud-config on BIOS, UEFI PXE and UEFI HTTP nodes, Ignition, TLS, proxyDHCP, local boot, Secure Boot and its refusal, an arm64 node and its refusal, an arm64 Secure Boot node and its refusal, two instances on two segments sharing one fleet through etcd)
	tests/e2e/sandbox-e2e all

lint-sandbox: ## shellcheck the sandbox scripts, the first-stage script and the serial rule
	shellcheck scripts/sandbox scripts/build-sandbox-assets scripts/build-sandbox-assets-arm64 tests/e2e/sandbox-e2e
	shellcheck -s bash templates/first_stage_script.sh
	shellcheck -s sh scripts/sandbox-assets/pxe-init scripts/sandbox-assets/installed-init scripts/sandbox-assets/udhcpc.script scripts/sandbox-assets/reboot pkg/host/machine-serial.sh

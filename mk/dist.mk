# Release tree and tarball, and the tests of what ships in them: the fetch
# scripts, the Dockerfile, the service units and the
# Vagrant flavour of the sandbox.

DIST_NAME := mayu.$(VERSION)-linux-amd64
DIST_DIR  := dist/$(DIST_NAME)
DIST_TAR  := dist/$(DIST_NAME).tar.gz
# undionly.kpxe, ipxe.efi and snponly.efi come from Debian's ipxe package, not our tree.
IPXE_DIR  ?= /usr/lib/ipxe
# The Secure Boot chain: Debian's shim-signed (Microsoft-signed shim) and
# grub-efi-amd64-signed (Debian-signed GRUB network image, under the name
# shim loads: grubx64.efi).
SHIM_EFI  ?= /usr/lib/shim/shimx64.efi.signed
GRUB_EFI  ?= /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
# Reproducible tarballs: every entry gets the time of the last commit.
DIST_MTIME ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BATS ?= bats

DIST_EXEC_SCRIPTS := fetch-coreos-image fetch-coreos-qemu-image fetch-flatcar-image fetch-yochu-assets
DIST_SHELL_SCRIPTS := $(addprefix scripts/,$(DIST_EXEC_SCRIPTS) fetch-lib.bash mayu.init) contrib/docker/healthcheck \
  $(wildcard scripts/vagrant/*.sh) scripts/tests/helpers.bash $(wildcard scripts/tests/*.bats) \
  $(wildcard scripts/vagrant/*.bats)
# Bats files that need no release tree; dist.bats and dockerfile.bats do.
DIST_SCRIPT_TESTS := $(filter-out scripts/tests/dist.bats scripts/tests/dockerfile.bats,$(wildcard scripts/tests/*.bats))

TEST_TARGETS += test-scripts test-dist

.PHONY: dist
dist: build ## release tree dist/mayu.<version>-linux-amd64/ and its .tar.gz
	@for f in $(IPXE_DIR)/undionly.kpxe $(IPXE_DIR)/ipxe.efi $(IPXE_DIR)/snponly.efi; do \
	  [ -r "$$f" ] || { echo "make dist: $$f is missing: install Debian's ipxe package (apt-get install ipxe) or set IPXE_DIR" >&2; exit 1; }; \
	done
	@for f in $(SHIM_EFI) $(GRUB_EFI); do \
	  [ -r "$$f" ] || { echo "make dist: $$f is missing: install Debian's shim-signed and grub-efi-amd64-signed (or set SHIM_EFI, GRUB_EFI)" >&2; exit 1; }; \
	done
	@for f in templates template_snippets config.yaml.example Dockerfile .dockerignore; do \
	  [ -e "$$f" ] || { echo "make dist: $$f is missing from the tree" >&2; exit 1; }; \
	done
	rm -rf $(DIST_DIR) $(DIST_TAR)
	mkdir -p $(DIST_DIR)/tftproot $(DIST_DIR)/static_html $(DIST_DIR)/contrib/systemd $(DIST_DIR)/contrib/docker
	install -m 0755 bin/mayu bin/mayuctl $(DIST_DIR)/
	install -m 0755 bin/mayuctl bin/infopusher $(DIST_DIR)/static_html/
	install -D -m 0755 bin/arm64/infopusher $(DIST_DIR)/static_html/arm64/infopusher
	install -D -m 0755 bin/arm64/mayuctl $(DIST_DIR)/static_html/arm64/mayuctl
	install -m 0644 $(IPXE_DIR)/undionly.kpxe $(IPXE_DIR)/ipxe.efi $(IPXE_DIR)/snponly.efi $(DIST_DIR)/tftproot/
	install -m 0644 $(SHIM_EFI) $(DIST_DIR)/tftproot/shimx64.efi
	install -m 0644 $(GRUB_EFI) $(DIST_DIR)/tftproot/grubx64.efi
	install -m 0644 tftproot/grubaa64.efi tftproot/shimaa64.efi $(DIST_DIR)/tftproot/
	cp -R templates template_snippets $(DIST_DIR)/
	install -m 0644 config.yaml.example Dockerfile .dockerignore VERSION $(DIST_DIR)/
	install -m 0755 $(addprefix scripts/,$(DIST_EXEC_SCRIPTS)) $(DIST_DIR)/
	install -m 0644 scripts/fetch-lib.bash $(DIST_DIR)/
	install -m 0644 contrib/systemd/mayu.service contrib/systemd/mayu-native.service $(DIST_DIR)/contrib/systemd/
	install -m 0755 scripts/mayu.init $(DIST_DIR)/contrib/
	install -m 0755 contrib/docker/healthcheck $(DIST_DIR)/contrib/docker/
	@# No top-level directory, like Mayu's own tarballs: unpack into a
	@# directory of your choosing (the sandbox walkthrough does).
	cd $(DIST_DIR) && LC_ALL=C tar --sort=name --owner=0 --group=0 --numeric-owner \
	  --mtime=@$(DIST_MTIME) -cf - $$(LC_ALL=C ls -A) | gzip -9n >$(CURDIR)/$(DIST_TAR)
	@echo "release tree: $(DIST_DIR)"
	@echo "tarball:      $(DIST_TAR)"

.PHONY: test-scripts
test-scripts: build ## shellcheck and bats tests of the scripts, units and Vagrant files
	@command -v shellcheck >/dev/null || { echo "test-scripts: shellcheck is missing (apt-get install shellcheck)" >&2; exit 1; }
	@command -v $(BATS) >/dev/null || { echo "test-scripts: bats is missing (apt-get install bats)" >&2; exit 1; }
	shellcheck -x $(DIST_SHELL_SCRIPTS)
	$(BATS) $(DIST_SCRIPT_TESTS)

.PHONY: test-dist
test-dist: dist ## unpack the release and run mayu from it; check the Dockerfile against it
	@command -v $(BATS) >/dev/null || { echo "test-dist: bats is missing (apt-get install bats)" >&2; exit 1; }
	MAYU_DIST_DIR=$(CURDIR)/$(DIST_DIR) MAYU_DIST_TAR=$(CURDIR)/$(DIST_TAR) \
	  $(BATS) scripts/tests/dist.bats scripts/tests/dockerfile.bats

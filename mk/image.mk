# The container image (Dockerfile) and the container flavour of the sandbox's
# acceptance test. No registry is needed: scripts/build-base-image makes the
# Debian base with debootstrap when the engine lacks it, and the image is
# built from `make dist`'s release tree (`--target release`) with the
# binaries the machine's Go built, so no Go image is pulled either.
MAYU_IMAGE ?= mayu:$(VERSION)

TEST_TARGETS += e2e-docker
LINT_TARGETS += lint-image

.PHONY: image base-image e2e-docker lint-image
base-image: ## the Debian base the Dockerfile starts FROM, made with debootstrap unless the engine has it (root)
	scripts/build-base-image

image: dist base-image ## the mayu container image $(MAYU_IMAGE) from the release tree; prints its size
	docker build --target release -t $(MAYU_IMAGE) $(DIST_DIR)
	@docker image inspect -f '{{.Size}}' $(MAYU_IMAGE) | \
	  awk '{printf "image: $(MAYU_IMAGE) %.1f MB\n", $$1 / 1e6}'

# Without root or an engine the test itself skips loudly (or fails under
# MAYU_E2E=required), as the other machine-level tests do: only then is the
# image not built first.
e2e-docker: build ## acceptance test of the image: sandbox --runtime=docker, qemu nodes PXE-boot from the container (root)
	@if [ "$$(id -u)" = 0 ] && docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory image; fi
	SANDBOX_IMAGE=$(MAYU_IMAGE) tests/e2e/sandbox-e2e docker

lint-image: ## shellcheck the image's scripts
	shellcheck scripts/build-base-image contrib/docker/healthcheck

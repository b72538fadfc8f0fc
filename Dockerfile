# Mayu's container image: mayu, mayuctl and dnsmasq, with the default
# templates, snippets, iPXE boot files and static files under /usr/lib/mayu.
# Run it as the README's "The container image" says:
#
#   docker run -d --name mayu --cap-add=NET_ADMIN --net=host \
#     -v $(pwd)/cluster:/var/lib/mayu \
#     -v $(pwd)/images:/usr/lib/mayu/images \
#     -v $(pwd)/yochu:/usr/lib/mayu/yochu \
#     -v $(pwd)/config.yaml:/etc/mayu/config.yaml:ro \
#     mayu -v=12 --no-tls
#
# The same file builds from two contexts:
#   the source tree (BuildKit):             docker build -t mayu .
#   an unpacked release (any builder):      docker build --target release -t mayu .
# `make image` does the second from `make dist`'s release tree, with the
# binaries the machine's Go built: no Go image to pull. The stages are in an
# order that lets the classic builder, which builds every stage up to the
# target, build `--target release` without the Go image.
ARG GO_VERSION=1.26

# --- CA certificates, without the openssl that installs them ---------------
# mayu is a static Go binary: it needs the bundle (for an external etcd
# discovery over HTTPS), not openssl and libssl (about 9 MB).
FROM debian:bookworm-slim AS certs
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# --- runtime: everything but the binaries ----------------------------------
FROM debian:bookworm-slim AS runtime
# dnsmasq-base: the DHCP/TFTP/DNS server mayu supervises. ipxe only lends its
# undionly.kpxe, ipxe.efi and snponly.efi to tftproot and is purged again; the
# Secure Boot chain's shimx64.efi and grubx64.efi are unpacked from Debian's
# shim-signed and grub-efi-amd64-signed (not installed: their scripts would
# set up this container's own boot), and so are grubaa64.efi and the
# arm64 Secure Boot chain's shimaa64.efi for arm64 machines (network.arm64)
# from grub-efi-arm64-signed and shim-signed of arm64, arm64 packages:
# the arm64 architecture is added for that download only. No git: mayu
# commits to the cluster directory itself. No config: mayu refuses to start
# without the one mounted at /etc/mayu/config.yaml, rather than provision
# from an example. mayuctl lives once, in static_html (served to machines),
# and is linked into PATH.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dnsmasq-base ipxe \
 && mkdir -p /usr/lib/mayu/tftproot /usr/lib/mayu/images /usr/lib/mayu/yochu /usr/lib/mayu/static_html /var/lib/mayu /etc/mayu \
 && cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi /usr/lib/mayu/tftproot/ \
 && apt-get purge -y --auto-remove ipxe \
 && mkdir /tmp/secureboot && cd /tmp/secureboot \
 && apt-get download shim-signed grub-efi-amd64-signed \
 && for deb in ./*.deb; do dpkg-deb -x "$deb" .; done \
 && cp usr/lib/shim/shimx64.efi.signed /usr/lib/mayu/tftproot/shimx64.efi \
 && cp usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed /usr/lib/mayu/tftproot/grubx64.efi \
 && dpkg --add-architecture arm64 && apt-get update \
 && apt-get download grub-efi-arm64-signed:arm64 shim-signed:arm64 \
 && dpkg-deb -x ./grub-efi-arm64-signed_*_arm64.deb . \
 && dpkg-deb -x ./shim-signed_*_arm64.deb . \
 && cp usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed /usr/lib/mayu/tftproot/grubaa64.efi \
 && cp usr/lib/shim/shimaa64.efi.signed /usr/lib/mayu/tftproot/shimaa64.efi \
 && dpkg --remove-architecture arm64 \
 && cd / && rm -rf /tmp/secureboot \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && ln -s /usr/lib/mayu/static_html/mayuctl /usr/bin/mayuctl
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY templates/ /usr/lib/mayu/templates/
COPY template_snippets/ /usr/lib/mayu/template_snippets/
COPY config.yaml.example /usr/share/doc/mayu/config.yaml.example
COPY contrib/docker/healthcheck /usr/lib/mayu/healthcheck
WORKDIR /usr/lib/mayu
# mayu creates the admin API's token file in the cluster volume at its first
# start; `docker exec <container> mayuctl ...` reads it from there.
ENV MAYU_TOKEN_FILE=/var/lib/mayu/.admin-tokens
VOLUME ["/var/lib/mayu", "/usr/lib/mayu/images", "/usr/lib/mayu/yochu"]
# HTTP(S), DHCP, TFTP, DNS
EXPOSE 4080 67/udp 69/udp 53/udp 53/tcp
# mayu answers over HTTP(S) and its dnsmasq runs (see the script).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["/usr/lib/mayu/healthcheck"]
# mayu is PID 1: SIGTERM reaches it, it stops dnsmasq and finishes the
# requests under way within --shutdown-timeout (docker stop's -t must be
# longer).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mayu", "--cluster-directory=/var/lib/mayu"]
CMD ["-v=12", "--no-git", "--no-tls"]

# --- binaries from an unpacked release (and `make image`) ------------------
FROM runtime AS release
COPY mayu /usr/bin/
COPY static_html/mayuctl static_html/infopusher /usr/lib/mayu/static_html/
COPY static_html/arm64/ /usr/lib/mayu/static_html/arm64/

# --- binaries built from the source tree (go.work workspace) ---------------
FROM golang:${GO_VERSION}-bookworm AS builder
WORKDIR /src
COPY go.work* VERSION ./
COPY pkg/ pkg/
COPY mayu/ mayu/
COPY mayuctl/ mayuctl/
# Not built here, but the workspace (and mayu's test requirement on tools)
# loads their go.mod files.
COPY tools/ tools/
COPY tests/ tests/
# Cache mounts keep modules and compiled packages across builds; only the
# modules the binaries need are downloaded.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -e; v=$(cat VERSION); \
    for t in mayu:./mayu mayuctl:./mayuctl infopusher:./mayuctl/cmd/infopusher arm64/mayuctl:./mayuctl arm64/infopusher:./mayuctl/cmd/infopusher; do \
      case $t in arm64/*) arch=arm64 ;; *) arch= ;; esac; \
      CGO_ENABLED=0 GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$v" -o "/out/${t%%:*}" "${t#*:}"; \
    done

# --- the source build: the last stage, what a plain docker build makes -----
FROM runtime AS source
COPY --from=builder /out/mayu /usr/bin/
COPY --from=builder /out/mayuctl /out/infopusher /usr/lib/mayu/static_html/
COPY --from=builder /out/arm64/ /usr/lib/mayu/static_html/arm64/

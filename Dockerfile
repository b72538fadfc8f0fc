# syntax=docker/dockerfile:1
#
# Mayu's container image: mayu, mayuctl and dnsmasq, with the default
# templates, snippets, iPXE boot files and static files under /usr/lib/mayu,
# run as in the coreos-pxe-sandbox walkthrough:
#
#   docker run --rm -it --cap-add=NET_ADMIN --net=host \
#     -v $(pwd)/cluster:/var/lib/mayu \
#     -v $(pwd)/images:/usr/lib/mayu/images \
#     -v $(pwd)/yochu:/usr/lib/mayu/yochu \
#     mayu -v=12 --no-git --no-tls
#
# The same file builds from two contexts (BuildKit skips the stage it does
# not need):
#   the source tree:    docker build -t mayu .
#   a release tarball:  docker build --build-arg MAYU_BINARIES=release -t mayu .
ARG MAYU_BINARIES=source
ARG GO_VERSION=1.26

# --- binaries built from the source tree (go.work workspace) ---------------
FROM golang:${GO_VERSION}-bookworm AS source
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
    for t in mayu:./mayu mayuctl:./mayuctl infopusher:./mayuctl/cmd/infopusher; do \
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$v" -o "/out/${t%%:*}" "${t#*:}"; \
    done

# --- binaries taken from an unpacked release tarball ------------------------
FROM scratch AS release
COPY mayu mayuctl /out/
COPY static_html/infopusher /out/

FROM ${MAYU_BINARIES} AS binaries

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
# dnsmasq-base: the DHCP/TFTP/DNS server mayu supervises; ipxe: undionly.kpxe
# and ipxe.efi for tftproot, taken from Debian rather than kept in our tree.
# No git: mayu commits to the cluster directory itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates dnsmasq-base ipxe \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/lib/mayu/tftproot /usr/lib/mayu/images /usr/lib/mayu/yochu /var/lib/mayu /etc/mayu \
 && cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/mayu/tftproot/
COPY --from=binaries /out/mayu /out/mayuctl /usr/bin/
COPY --from=binaries /out/mayuctl /out/infopusher /usr/lib/mayu/static_html/
COPY static_html/index.html /usr/lib/mayu/static_html/
COPY templates/ /usr/lib/mayu/templates/
COPY template_snippets/ /usr/lib/mayu/template_snippets/
# Used unless a config is mounted over it.
COPY config.yaml.example /etc/mayu/config.yaml
WORKDIR /usr/lib/mayu
VOLUME ["/var/lib/mayu", "/usr/lib/mayu/images", "/usr/lib/mayu/yochu"]
# HTTP(S), DHCP, TFTP, DNS
EXPOSE 4080 67/udp 69/udp 53/udp 53/tcp
ENTRYPOINT ["mayu", "--cluster-directory=/var/lib/mayu"]
CMD ["-v=12", "--no-git", "--no-tls"]

# syntax=docker/dockerfile:1
#
# One image for the four Gatehouse processes; docker-compose.yml picks the command:
#   gateway run --config /etc/gatehouse/Caddyfile --adapter caddyfile
#   controlplane serve | controlplane migrate
#   sampleapi
#   deliverer
#
#   docker build -t gatehouse:dev .

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# Dependencies first, so that editing code does not invalidate the module download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/ \
      ./cmd/gateway ./cmd/controlplane ./cmd/sampleapi ./cmd/deliverer

FROM debian:bookworm-slim
# curl for the compose healthchecks; ca-certificates for webhook targets over HTTPS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/gatehouse --create-home gatehouse \
 && mkdir -p /etc/gatehouse /var/lib/gatehouse/caddy/data /var/lib/gatehouse/caddy/config \
 && chown -R gatehouse:gatehouse /var/lib/gatehouse
COPY --from=build /out/ /usr/local/bin/
COPY Caddyfile /etc/gatehouse/Caddyfile
ENV DATA_DIR=/var/lib/gatehouse \
    XDG_DATA_HOME=/var/lib/gatehouse/caddy/data \
    XDG_CONFIG_HOME=/var/lib/gatehouse/caddy/config \
    GATEWAY_PORT=8080 \
    CONTROLPLANE_ADDR=:8081 \
    SAMPLEAPI_ADDR=:8082 \
    DELIVERER_ADDR=:8083 \
    CADDY_ADMIN=localhost:2019
USER gatehouse
WORKDIR /var/lib/gatehouse
# Caddy's admin API (2019) stays on the container's loopback: see docker-compose.yml.
EXPOSE 8080 8081 8082 8083
# No default command on purpose: each compose service names its binary.
CMD ["sh", "-c", "echo 'choose a command: gateway | controlplane | sampleapi | deliverer' >&2; exit 2"]

# Loupe images: static binaries on distroless bases (Loupe ships the kind of image it protects).
#   docker buildx build --target agent     -t loupe-agent .
#   docker buildx build --target collector -t loupe-collector .
#   docker buildx build --target cli       -t loupe .
# Without Docker, `make oci` builds the same images as OCI tarballs.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/loupe-dev/loupe/internal/version.Version=${VERSION} -X github.com/loupe-dev/loupe/internal/version.Commit=${COMMIT}" \
      -o /out/ ./cmd/loupe ./cmd/loupe-agent ./cmd/loupe-collector

# The agent runs as root (it reads every container's files and loads eBPF programs);
# the DaemonSet drops every capability it does not need.
FROM gcr.io/distroless/static-debian12 AS agent
COPY --from=build /out/loupe-agent /loupe-agent
ENTRYPOINT ["/loupe-agent"]

FROM gcr.io/distroless/static-debian12:nonroot AS collector
COPY --from=build /out/loupe-collector /loupe-collector
USER 65532:65532
ENTRYPOINT ["/loupe-collector"]

FROM gcr.io/distroless/static-debian12:nonroot AS cli
COPY --from=build /out/loupe /loupe
USER 65532:65532
ENTRYPOINT ["/loupe"]

# Multi-stage build of the sidecar: a static binary on distroless, non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY plugin/ plugin/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/vault-kms-plugin ./cmd/vault-kms-plugin

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/vault-kms-plugin /vault-kms-plugin
USER 65532:65532
ENTRYPOINT ["/vault-kms-plugin"]

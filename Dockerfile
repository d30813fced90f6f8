# The plugin image, for those who build with Docker (buildx for both
# platforms: docker buildx build --platform linux/amd64,linux/arm64 ...).
# `make image` builds the same image without a container engine
# (kmsctl image build, lifecycle/imagebuild), reproducibly; this file matches
# it: the same static binary flags, /etc files, user, entrypoint and labels.
# lifecycle/imagebuild's tests keep the two in step.
#
# Pass the labels the Makefile fills in from git:
#   --build-arg REVISION=$(git rev-parse HEAD)
#   --build-arg VERSION=$(git describe --tags --always --dirty)
#   --build-arg CREATED=$(git log -1 --format=%cI)
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY plugin/ plugin/
RUN env CGO_ENABLED=0 GOFLAGS= GOEXPERIMENT= GOAMD64=v1 GOARM64=v8.0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
	go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o /out/vault-kms-plugin ./cmd/vault-kms-plugin

FROM scratch
ARG SOURCE=https://github.com/vaultkms/vault-kms-plugin
ARG REVISION=
ARG VERSION=
ARG CREATED=
COPY lifecycle/imagebuild/rootfs/ /
COPY --from=build /out/vault-kms-plugin /vault-kms-plugin
LABEL org.opencontainers.image.title="vault-kms-plugin" \
	org.opencontainers.image.source="${SOURCE}" \
	org.opencontainers.image.revision="${REVISION}" \
	org.opencontainers.image.version="${VERSION}" \
	org.opencontainers.image.created="${CREATED}" \
	io.github.vaultkms.kms-plugin.flag-interface="v1"
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/vault-kms-plugin"]

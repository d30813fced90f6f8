# vault-kms-plugin. `make demo` runs the local stack, `make test` runs every
# test against real components. Heavy builds are cached under .build/.

SHELL := /bin/bash
.DEFAULT_GOAL := build

BUILD := $(CURDIR)/.build
BIN   := $(BUILD)/bin
PROGRESS := $(CURDIR)/e2e/tools/progress.sh
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Tests find the real components here.
export VAULT_BIN  := $(BIN)/vault
export PLUGIN_BIN := $(BIN)/vault-kms-plugin
export COSIGN_BIN := $(BIN)/cosign
export ETCD_BIN   := $(BIN)/etcd

.PHONY: build plugin vault kube-apiserver kubelet kube-controller-manager kubectl etcd node-packages cosign registry promtool test test-pure check unit e2e fuzz demo demo-down bench clean image kmsctl manifests FORCE

## build: the sidecar binary
build: plugin
plugin: $(BIN)/vault-kms-plugin
$(BIN)/vault-kms-plugin: FORCE
	@mkdir -p $(BIN)
	go build -trimpath -o $@ ./cmd/vault-kms-plugin

## kmsctl: the operator CLI
kmsctl: $(BIN)/kmsctl
$(BIN)/kmsctl: FORCE
	@mkdir -p $(BIN)
	go build -trimpath -o $@ ./cmd/kmsctl

# The image's plugin binaries are byte-identical for one commit and Go
# release: no paths (-trimpath), no VCS stamp (a dirty tree would differ; the
# image's labels carry revision and version), no build ID, no cgo, and
# GOFLAGS, GOEXPERIMENT and the CPU baselines fixed rather than taken from the
# caller's environment. lifecycle/imagebuild's reproducibility test reads and
# builds with exactly these three variables.
IMAGE_GOENV   := CGO_ENABLED=0 GOFLAGS= GOEXPERIMENT= GOAMD64=v1 GOARM64=v8.0
IMAGE_GOFLAGS := -trimpath -buildvcs=false
IMAGE_LDFLAGS := -s -w -buildid=
IMAGE_ARCHES  := amd64 arm64
IMAGE_DIR     := $(BUILD)/image
IMAGE_SOURCE  ?= https://github.com/vaultkms/vault-kms-plugin
# Every timestamp in the image is the commit time, or SOURCE_DATE_EPOCH if set.
IMAGE_CREATED  = $(if $(SOURCE_DATE_EPOCH),--source-date-epoch $(SOURCE_DATE_EPOCH),--created "$$(git log -1 --format=%cI)")

## image: the plugin image for linux/amd64 and linux/arm64, built without a
## container engine and reproducibly, as an OCI layout in .build/image/oci;
## IMAGE=<repo> also pushes it and prints <repo>@sha256:... last,
## INSECURE_REGISTRY=1 pushes over plain http
image: kmsctl
	@mkdir -p $(IMAGE_DIR)
	@for arch in $(IMAGE_ARCHES); do \
		$(PROGRESS) "building vault-kms-plugin for linux/$$arch (static, reproducible)" \
			env $(IMAGE_GOENV) GOOS=linux GOARCH=$$arch go build $(IMAGE_GOFLAGS) -ldflags='$(IMAGE_LDFLAGS)' \
			-o $(IMAGE_DIR)/vault-kms-plugin-linux-$$arch ./cmd/vault-kms-plugin || exit 1; \
	done
	@echo ">> assembling the OCI image index (kmsctl image build)$(if $(IMAGE), and pushing it to $(IMAGE))"
	@$(BIN)/kmsctl image build \
		$(foreach a,$(IMAGE_ARCHES),--binary linux/$(a)=$(IMAGE_DIR)/vault-kms-plugin-linux-$(a)) \
		--source '$(IMAGE_SOURCE)' \
		--revision "$$(git rev-parse HEAD)" \
		--version "$$(git describe --tags --always --dirty)" \
		$(IMAGE_CREATED) \
		--layout $(IMAGE_DIR)/oci \
		$(if $(IMAGE),--push '$(IMAGE)') \
		$(if $(filter 1 true yes,$(INSECURE_REGISTRY)),--allow-insecure-registry)

## manifests: regenerate the reviewed examples in manifests/ from
## manifests/kms.yaml (a test in lifecycle/render checks they are current)
manifests:
	go run ./cmd/kmsctl render --config manifests/kms.yaml --out manifests

## vault: HashiCorp Vault v1.21.0 built from the Go module proxy, cached
vault: $(BIN)/vault
$(BIN)/vault: e2e/tools/vault/go.mod e2e/tools/vault/go.sum e2e/tools/vault/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building Vault v1.21.0 from the Go module proxy (cold: 7-15 min, then cached in .build/)" \
		bash -c 'cd e2e/tools/vault && go build -trimpath -ldflags="-s -w" -o $@.tmp . && mv $@.tmp $@'

KUBE_VERSION := v1.37.2
KUBE_VERSION_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
KUBE_MOD := e2e/tools/kubernetes
KUBE_DEPS := $(KUBE_MOD)/go.mod $(KUBE_MOD)/go.sum

# kube-apiserver, kubelet, kube-controller-manager and kubectl v1.37.2, built
# from the Go module proxy (one module, one shared build cache) and cached.
$(BIN)/kube-apiserver $(BIN)/kubelet $(BIN)/kube-controller-manager $(BIN)/kubectl: $(BIN)/%: $(KUBE_DEPS) $(KUBE_MOD)/%/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building $* $(KUBE_VERSION) from the Go module proxy (cold: 5-10 min for the first, 1-2 min for each next; then cached in .build/)" \
		bash -c 'cd $(KUBE_MOD) && go build -trimpath -ldflags="-s -w $(KUBE_VERSION_LDFLAGS)" -o $@.tmp ./$* && mv $@.tmp $@'

## kube-apiserver, kubelet, kube-controller-manager, kubectl: Kubernetes v1.37.2
kube-apiserver: $(BIN)/kube-apiserver
kubelet: $(BIN)/kubelet
kube-controller-manager: $(BIN)/kube-controller-manager
kubectl: $(BIN)/kubectl

## etcd: v3.7.0 (what Kubernetes 1.37 ships) built from the Go module proxy, cached
etcd: $(BIN)/etcd
$(BIN)/etcd: e2e/tools/etcd/go.mod e2e/tools/etcd/go.sum e2e/tools/etcd/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building etcd v3.7.0 from the Go module proxy (cold: about 1 min, then cached in .build/)" \
		bash -c 'cd e2e/tools/etcd && go build -trimpath -ldflags="-s -w" -o $@.tmp . && mv $@.tmp $@'

## node: containerd and runc from Debian for the e2e's real kubelet node
node-packages:
	@if ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then \
		echo ">> installing containerd and runc from Debian"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq containerd runc >/dev/null; \
		$(SUDO) systemctl disable --now containerd >/dev/null 2>&1 || true; \
	fi
	@containerd --version; runc --version | head -1

## cosign: the sigstore cosign CLI v2.6.5 built from the Go module proxy, cached;
## tests sign images with it (classic .sig tag and --new-bundle-format)
cosign: $(BIN)/cosign
$(BIN)/cosign: e2e/tools/cosign/go.mod e2e/tools/cosign/go.sum e2e/tools/cosign/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building cosign v2.6.5 from the Go module proxy (cold: 5-25 min depending on load, then cached in .build/)" \
		bash -c 'cd e2e/tools/cosign && go build -trimpath -ldflags="-s -w" -o $@.tmp . && mv $@.tmp $@'

## registry: Debian's docker-registry (distribution 2.8, no referrers API),
## installed when missing; tests start their own on loopback
registry:
	@if [ ! -x /usr/bin/docker-registry ]; then \
		echo ">> installing docker-registry from Debian"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker-registry >/dev/null; \
		$(SUDO) systemctl disable --now docker-registry >/dev/null 2>&1 || true; \
	fi
	@/usr/bin/docker-registry --version

## promtool: Debian's prometheus package for its promtool, installed when
## missing and never started; manifests/ tests check the alerting rules with it
promtool:
	@if ! command -v promtool >/dev/null; then \
		echo ">> installing prometheus (for promtool) from Debian"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		$(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	fi
	@promtool --version 2>&1 | head -1

## test: formatting, vet, unit and integration tests against a real Vault,
## and the end-to-end tests on a real cluster
test: check unit e2e

## test-pure: only the tests that need nothing installed: no Vault, etcd,
## registry, cosign or promtool, and no binary built. Tests that need a real
## component carry the build tag `integration`; `make unit` runs both tiers.
test-pure:
	go test -count=1 ./...

check:
	@echo ">> gofmt and go vet"
	@out=$$(find . -name '*.go' -not -path './.build/*' -exec gofmt -l {} +); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags integration ./...
	cd e2e && go vet ./...

unit: vault plugin cosign registry etcd promtool
	@echo ">> unit and integration tests (real Vault at $(VAULT_BIN))"
	go test -tags integration -race -count=1 ./...

## e2e: etcd, kube-apiserver, Vault and the plugin as processes on loopback
e2e: vault kube-apiserver kubelet kube-controller-manager etcd plugin node-packages registry cosign image
	@echo ">> end-to-end tests on a real cluster (logs of failed tests are printed)"
	cd e2e && go test -count=1 -timeout 40m ./...

## demo: the whole local stack (dev Vault, plugin, etcd, kube-apiserver),
## in the foreground until Ctrl-C or `make demo-down`; state in .build/demo
demo: vault kube-apiserver kubelet kubectl etcd plugin node-packages registry cosign image
	@cd e2e && go build -o $(BIN)/e2e-demo ./cmd/demo
	@$(BIN)/e2e-demo

demo-down:
	@if [ -x $(BIN)/e2e-demo ]; then $(BIN)/e2e-demo -down; else echo "no demo has run"; fi

## bench: plugin vs direct Vault decrypts at concurrency 1/8/64/256, Status
## latency, RSS, idle Vault requests (BenchmarkLoad), in-process paths, and
## listing 10,000 Secrets after an API server restart (KMS vs identity), and
## the etcd scan of kmsctl status (values/s), and the migration engines of a
## key rotation against kubectl replace and the API server's ceiling
bench: vault kube-apiserver kube-controller-manager kubectl etcd plugin kmsctl
	@echo ">> in-process benchmarks"
	go test ./plugin -run '^$$' -bench '^Benchmark(StatusInMemory|StatusOverSocket|ParseCiphertext)$$' -benchmem -count=1
	@echo ">> load: plugin through the API server's KMSv2 client beside direct Vault transit (about 2 min)"
	set -o pipefail; go test -tags integration ./plugin -run '^$$' -bench '^BenchmarkLoad$$' -benchtime 1x -count=1 -timeout 20m | grep -v '^[IE][0-9]'
	@echo ">> kube-apiserver: restart to first complete LIST of 10,000 Secrets, KMS vs identity (about 3 min)"
	cd e2e && go test -run '^$$' -bench '^BenchmarkListSecretsAfterRestart$$' -benchtime 1x -count=1 -timeout 30m .
	@echo ">> key rotation: migrating 5,000 Secrets, kmsctl migrate (direct, svm) beside kubectl replace and the API server's ceiling (about 8 min)"
	cd e2e && go test -run '^$$' -bench '^BenchmarkMigrationEngines$$' -benchtime 1x -count=1 -timeout 40m .
	@echo ">> kmsctl status: etcd scan of 20,000 stored values (values/s; goal 50,000/s)"
	go test -tags integration ./lifecycle/scan -run '^$$' -bench '^BenchmarkScan$$' -benchtime 5x -count=1

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	go test ./plugin -run '^$$' -fuzz '^FuzzParseCiphertext$$' -fuzztime $(FUZZTIME)
	go test ./plugin -run '^$$' -fuzz '^FuzzParseKeyID$$' -fuzztime $(FUZZTIME)
	go test ./lifecycle/scan -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf $(BIN)/vault-kms-plugin

FORCE:

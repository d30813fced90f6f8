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

.PHONY: build plugin vault kube-apiserver kubectl etcd test check unit e2e fuzz demo demo-down bench clean FORCE

## build: the sidecar binary
build: plugin
plugin: $(BIN)/vault-kms-plugin
$(BIN)/vault-kms-plugin: FORCE
	@mkdir -p $(BIN)
	go build -trimpath -o $@ ./cmd/vault-kms-plugin

## vault: HashiCorp Vault v1.21.0 built from the Go module proxy, cached
vault: $(BIN)/vault
$(BIN)/vault: e2e/tools/vault/go.mod e2e/tools/vault/go.sum e2e/tools/vault/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building Vault v1.21.0 from the Go module proxy (cold: 7-15 min, then cached in .build/)" \
		bash -c 'cd e2e/tools/vault && go build -trimpath -ldflags="-s -w" -o $@.tmp . && mv $@.tmp $@'

KUBE_VERSION_LDFLAGS := -X k8s.io/component-base/version.gitVersion=v1.36.3 \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36

## kube-apiserver: v1.36.3 built from the Go module proxy, cached
kube-apiserver: $(BIN)/kube-apiserver
$(BIN)/kube-apiserver: e2e/tools/kube-apiserver/go.mod e2e/tools/kube-apiserver/go.sum e2e/tools/kube-apiserver/main.go
	@mkdir -p $(BIN)
	@$(PROGRESS) "building kube-apiserver v1.36.3 from the Go module proxy (cold: 5-10 min, then cached in .build/)" \
		bash -c 'cd e2e/tools/kube-apiserver && go build -trimpath -ldflags="-s -w $(KUBE_VERSION_LDFLAGS)" -o $@.tmp . && mv $@.tmp $@'

## kubectl: v1.36.3 from the same module, for the demo (Debian's is 1.20)
kubectl: $(BIN)/kubectl
$(BIN)/kubectl: $(BIN)/kube-apiserver e2e/tools/kube-apiserver/kubectl/main.go
	@$(PROGRESS) "building kubectl v1.36.3 (shares kube-apiserver's build cache)" \
		bash -c 'cd e2e/tools/kube-apiserver && go build -trimpath -ldflags="-s -w $(KUBE_VERSION_LDFLAGS)" -o $@.tmp ./kubectl && mv $@.tmp $@'

## etcd: Debian's etcd-server (3.4), installed when missing
etcd:
	@if ! command -v etcd >/dev/null; then \
		echo ">> installing etcd-server from Debian"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq etcd-server >/dev/null; \
		$(SUDO) systemctl disable --now etcd >/dev/null 2>&1 || true; \
	fi
	@etcd --version | head -1

## test: formatting, vet, unit and integration tests against a real Vault,
## and the end-to-end tests on a real cluster
test: check unit e2e

check:
	@echo ">> gofmt and go vet"
	@out=$$(find . -name '*.go' -not -path './.build/*' -exec gofmt -l {} +); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd e2e && go vet ./...

unit: vault plugin
	@echo ">> unit and integration tests (real Vault at $(VAULT_BIN))"
	go test -race -count=1 ./...

## e2e: etcd, kube-apiserver, Vault and the plugin as processes on loopback
e2e: vault kube-apiserver etcd plugin
	@echo ">> end-to-end tests on a real cluster (logs of failed tests are printed)"
	cd e2e && go test -count=1 -timeout 40m ./...

## demo: the whole local stack (dev Vault, plugin, etcd, kube-apiserver),
## in the foreground until Ctrl-C or `make demo-down`; state in .build/demo
demo: vault kube-apiserver kubectl etcd plugin
	@cd e2e && go build -o $(BIN)/e2e-demo ./cmd/demo
	@$(BIN)/e2e-demo

demo-down:
	@if [ -x $(BIN)/e2e-demo ]; then $(BIN)/e2e-demo -down; else echo "no demo has run"; fi

## bench: plugin vs direct Vault decrypts at concurrency 1/8/64/256, Status
## latency, RSS, idle Vault requests (BenchmarkLoad), in-process paths, and
## listing 10,000 Secrets after an API server restart (KMS vs identity)
bench: vault kube-apiserver etcd plugin
	@echo ">> in-process benchmarks"
	go test ./plugin -run '^$$' -bench '^Benchmark(StatusInMemory|StatusOverSocket|ParseCiphertext)$$' -benchmem -count=1
	@echo ">> load: plugin through the API server's KMSv2 client beside direct Vault transit (about 2 min)"
	set -o pipefail; go test ./plugin -run '^$$' -bench '^BenchmarkLoad$$' -benchtime 1x -count=1 -timeout 20m | grep -v '^[IE][0-9]'
	@echo ">> kube-apiserver: restart to first complete LIST of 10,000 Secrets, KMS vs identity (about 3 min)"
	cd e2e && go test -run '^$$' -bench '^BenchmarkListSecretsAfterRestart$$' -benchtime 1x -count=1 -timeout 30m .

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	go test ./plugin -run '^$$' -fuzz '^FuzzParseCiphertext$$' -fuzztime $(FUZZTIME)
	go test ./plugin -run '^$$' -fuzz '^FuzzParseKeyID$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf $(BIN)/vault-kms-plugin

FORCE:

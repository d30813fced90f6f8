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

.PHONY: build plugin vault test check unit fuzz bench clean FORCE

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

## test: formatting, vet, unit and integration tests against a real Vault
test: check unit

check:
	@echo ">> gofmt and go vet"
	@out=$$(find . -name '*.go' -not -path './.build/*' -exec gofmt -l {} +); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

unit: vault plugin
	@echo ">> unit and integration tests (real Vault at $(VAULT_BIN))"
	go test -race -count=1 ./...

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	go test ./plugin -run '^$$' -fuzz '^FuzzParseCiphertext$$' -fuzztime $(FUZZTIME)
	go test ./plugin -run '^$$' -fuzz '^FuzzParseKeyID$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf $(BIN)/vault-kms-plugin

FORCE:

# Loupe — build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/loupe-dev/loupe/internal/version.Version=$(VERSION) -X github.com/loupe-dev/loupe/internal/version.Commit=$(COMMIT)
BINARIES := loupe loupe-agent loupe-collector

# Flags for the BPF C code, set once here and passed to bpf2go by `go generate`.
export BPF_CFLAGS := -O2 -g -Wall -Werror

# Go test settings: e2e tests need root; LOUPE_REQUIRE_E2E=1 turns their skips into failures.
TEST_FLAGS ?= -count=1 -timeout 30m
FUZZTIME ?= 5s

.PHONY: help deps build generate check-generate lint test test-kernels test-runtimes test-unit fuzz demo bench image oci clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install what the project needs (Debian packages, pinned generators); idempotent
	@bash scripts/deps.sh

build: ## build bin/loupe, bin/loupe-agent, bin/loupe-collector
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(BINARIES))

generate: deps ## regenerate protobuf and BPF code (committed)
	$(GO) generate ./...
	clang --version | head -1 > bpf/clang.version

check-generate: deps ## fail when the committed generated code is stale
	@bash scripts/check-generate.sh

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: deps build lint check-generate ## set-up, then every test (unit, e2e as root, fuzz seeds, brief fuzzing, promtool)
	$(GO) test $(TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory test-kernels
	@$(MAKE) --no-print-directory test-runtimes

test-kernels: ## run the ./bpf tests in qemu on each kernel of test/kernels/kernels.txt
	@bash scripts/kernels.sh run

test-runtimes: ## run the runtime and CRI e2e tests on each containerd of internal/testenv/containerd-versions.txt
	@bash scripts/containerd-versions.sh run

fuzz: ## run each fuzz target briefly (FUZZTIME=5s)
	@bash scripts/fuzz.sh $(FUZZTIME)

demo: deps build ## the main job end to end (see README)
	@bash scripts/demo.sh

bench: deps build ## run every benchmark and print the figures for docs/performance.md
	@bash bench/run.sh

IMAGE_REGISTRY ?= ghcr.io/loupe-dev

image: ## build the agent, collector and CLI images with docker buildx (needs Docker)
	for t in agent:loupe-agent collector:loupe-collector cli:loupe; do \
	  docker buildx build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
	    --target $${t%%:*} -t $(IMAGE_REGISTRY)/$${t#*:}:$(VERSION) --load . || exit 1; \
	done

oci: build ## build the same images as OCI tarballs in bin/oci without Docker (go-containerregistry)
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) \
	  $(GO) run ./deploy/oci --bin bin --out bin/oci --registry $(IMAGE_REGISTRY) --version $(VERSION) --commit $(COMMIT)

clean: ## remove build output
	rm -rf bin

# EmberFS build. `make up` starts a local cluster; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/emberfs
# Go tests run with the race detector; GOTEST_FLAGS adds to them (e.g. -run X).
GOTEST_FLAGS ?=
GO_TEST_TIMEOUT ?= 15m

.PHONY: all build test test-go lint proto clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/emberfs

test: lint test-go

test-go:
	$(GO) test -race -count=1 -timeout $(GO_TEST_TIMEOUT) $(GOTEST_FLAGS) ./...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

proto:
	scripts/genproto.sh

clean:
	rm -rf bin .tools

# EmberFS build. `make up` starts a local cluster; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/emberfs
# Go tests run with the race detector; GOTEST_FLAGS adds to them (e.g. -run X).
GOTEST_FLAGS ?=
GO_TEST_TIMEOUT ?= 15m

# The Python venv lives outside the checkout so every clone (and CI) on a
# machine reuses it; `make venv` installs only what is missing.
VENV ?= $(HOME)/.cache/emberfs/venv
PY := $(VENV)/bin/python

.PHONY: all build up test test-go test-python test-chaos lint proto venv python clean etcd bench

all: build

build:
	$(GO) build -o $(BIN) ./cmd/emberfs

# Starts a local cluster (mgmtd, meta, 3 storage services, 3 replicas) with
# its data in ./data, mounted at ./mnt; Ctrl-C unmounts and stops it.
up: build
	$(BIN) up --data ./data --mount ./mnt

test: lint test-go test-python

# The chaos run (tests/chaos) breaks a cluster of real processes for
# CHAOS_DURATION (default 60s); `make test` runs it with the default, this
# target runs it alone (CHAOS_DURATION=30m make test-chaos for a long run).
test-chaos: etcd
	$(GO) test -count=1 -v -timeout 60m -run TestChaos ./tests/chaos

# The etcd engine's tests run a real etcd cluster; the server is built from
# the Go module proxy once per machine and cached (scripts/build-etcd.sh).
etcd:
	scripts/build-etcd.sh >/dev/null

test-go: etcd
	$(GO) test -race -count=1 -timeout $(GO_TEST_TIMEOUT) $(GOTEST_FLAGS) ./...

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

proto:
	scripts/genproto.sh

venv: $(VENV)/.emberfs-requirements

$(VENV)/.emberfs-requirements: python/requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r python/requirements-dev.txt
	cp python/requirements-dev.txt $@

# Generates the gopy bindings, builds dist/emberfs-*.whl and installs it
# into the venv.
python: venv
	scripts/build-python.sh $(PY)
	$(PY) -m pip install -q --force-reinstall --no-deps dist/emberfs-*.whl

test-python: python
	cd python/tests && EMBERFS_WHEEL=$$(ls $(CURDIR)/dist/emberfs-*.whl) $(PY) -m pytest -q -p no:cacheprovider .

# Runs the storage, metadata, FUSE and Python benchmarks and prints their
# tables (Markdown; progress on stderr): about 15 minutes on the 2-core VM.
# The FUSE part needs root and fio; BENCH_REPLICAS sets its chain length.
# Each benchmark runs its baseline (plain TCP, local disk, Redis) in the same
# run; none asserts a speed.
BENCH_REPLICAS ?= 1
bench: build python
	$(BIN) bench storage
	d=$$(mktemp -d /tmp/emberfs-benchmeta-XXXXXX); $(BIN) bench meta --kv badger:$$d; rc=$$?; rm -rf $$d; exit $$rc
	REPLICAS=$(BENCH_REPLICAS) bench/fuse.sh
	$(PY) -m emberfs.bench torch --size-gib 1

clean:
	rm -rf bin .tools

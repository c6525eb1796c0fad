# boltbox: entry points. Each target installs what it needs (scripts/setup.sh, idempotent)
# and then does its job. Run as root on a fresh Debian machine.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Caches outside the clone so that re-runs and fresh clones are fast.
BOLTBOX_CACHE ?= $(if $(filter 0,$(shell id -u)),/var/cache/boltbox,$(HOME)/.cache/boltbox)
export BOLTBOX_CACHE
export CARGO_TARGET_DIR ?= $(BOLTBOX_CACHE)/target
AARCH64 := aarch64-unknown-linux-gnu
# Pure-logic crates whose tests also run on aarch64 under qemu-user.
AARCH64_TEST_PACKAGES := -p boltbox-board -p boltbox-executor

.PHONY: all setup test test-cargo test-unit test-regtest test-demo demo-build test-aarch64 test-image lint aarch64 demo image bench reliability help

help:
	@echo "make test      run every test tier (unit, regtest, aarch64 under qemu-user, image)"
	@echo "make demo      two nodes on simulated boards against a local regtest bitcoind"
	@echo "make image     build the flashable image dist/boltbox-<version>-arm64.img.xz"
	@echo "make aarch64   cross-build the release boltbox binary for the board"
	@echo "make bench     run the benchmarks"
	@echo "make reliability  the reliability suite at full counts (docs/RELIABILITY.md)"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "tiers: make test-unit | test-regtest | test-demo | test-aarch64 | test-image (test-cargo: unit and regtest)"

setup:
	scripts/setup.sh base cross bitcoind electrs vss

# Tiers 1 and 2 run in one cargo invocation: the same package selection builds the dependency
# graph once for every test binary and the demo (a different selection unifies other features
# and builds it again).
test: lint test-cargo test-demo test-aarch64 test-image

test-cargo:
	scripts/setup.sh base bitcoind electrs vss
	cargo test --workspace --locked

lint:
	scripts/setup.sh base
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Tier 1: unit tests in each crate (the appliance's supervisor test runs the real binary
# against a regtest bitcoind, so it is provisioned here too).
test-unit:
	scripts/setup.sh base bitcoind electrs vss
	cargo test --workspace --locked --exclude boltbox-tests

# Tier 2: nodes against a real bitcoind (and an Electrum server, and a vss-server on its own
# PostgreSQL) on regtest.
test-regtest:
	scripts/setup.sh base bitcoind electrs vss
	cargo test --locked -p boltbox-tests

# Tier 3: the pure-logic crates' tests, cross-built and run under qemu-user.
test-aarch64:
	scripts/setup.sh cross
	cargo test --locked --target $(AARCH64) $(AARCH64_TEST_PACKAGES)

# Tier 4: the image, built and boot-tested in QEMU: booted twice from its own kernel and
# initramfs, driven through the link board against a regtest bitcoind on the host (docs/IMAGE.md).
test-image: image
	scripts/setup.sh base bitcoind electrs image
	cargo run --locked -p boltbox-image -- boot-test

# The reliability suite at full counts, printing its figures (docs/RELIABILITY.md): `make test`
# runs the same tests with a few kills and proptest's default case count.
RELIABILITY_KILLS ?= 200
RELIABILITY_POWER_CUTS ?= 20
reliability: image
	scripts/setup.sh base bitcoind electrs image
	BOLTBOX_KILLS=$(RELIABILITY_KILLS) cargo test --locked -p boltbox --test kill_storm -- --nocapture
	BOLTBOX_KILLS=$(RELIABILITY_KILLS) cargo test --locked -p boltbox-node --test accounts_crash
	PROPTEST_CASES=200 cargo test --locked -p boltbox-node --test accounts_oracle
	cargo test --locked -p boltbox-tests --test storage_faults -- --nocapture
	PROPTEST_CASES=20000 cargo test --locked -p boltbox-board --lib -- gesture display emulated
	BOLTBOX_POWER_CUTS=$(RELIABILITY_POWER_CUTS) cargo run --locked -p boltbox-image -- boot-test

aarch64:
	scripts/setup.sh base cross
	cargo build --locked --release --target $(AARCH64) -p boltbox
	@file -L $(CARGO_TARGET_DIR)/$(AARCH64)/release/boltbox
	qemu-aarch64-static -L /usr/aarch64-linux-gnu $(CARGO_TARGET_DIR)/$(AARCH64)/release/boltbox --version
	@echo "built: $(CARGO_TARGET_DIR)/$(AARCH64)/release/boltbox"

# Two boltbox boards side by side in the terminal (appliance/examples/demo.rs). DEMO_ARGS:
# --for-secs N (then a safe shutdown), --keep (keep data dirs and logs), --check.
DEMO := $(CARGO_TARGET_DIR)/debug/examples/demo

# Built as `make test` builds it (cargo test builds examples), so that the test run and the
# demo share one build.
demo-build:
	scripts/setup.sh base bitcoind
	cargo test --workspace --locked --no-run

demo: demo-build
	$(DEMO) $(DEMO_ARGS)

# The demo unattended: it must fund, open, pay both ways and shut both boards down safely.
test-demo: demo-build
	$(DEMO) --for-secs 40 --check < /dev/null

# The flashable image: dist/boltbox-<version>-arm64.img.xz and its .sha256 (docs/IMAGE.md).
# The Debian base root is cached in $(BOLTBOX_CACHE)/image, keyed by its recipe.
image:
	scripts/setup.sh base image
	cargo run --locked -p boltbox-image -- build

# The SD-card flush model (LD_PRELOAD): +10 ms per fsync/fdatasync, one at a time.
SDCARD_SHIM := $(CARGO_TARGET_DIR)/sdcard_fsync.so

$(SDCARD_SHIM): node/benches/sdcard_fsync.c
	@mkdir -p $(dir $@)
	gcc -shared -fPIC -O2 -Wall -Wextra -o $@ $< -ldl -lpthread

# Every benchmark, each comparison in one run on the same disk (and under the SD-card model).
# The figures and how to read them: docs/BENCHMARKS.md.
BENCH_ENV := BOLTBOX_SDCARD_SHIM=$(SDCARD_SHIM) BOLTBOX_BENCH_DIR=$(BOLTBOX_CACHE)/bench

bench: $(SDCARD_SHIM)
	scripts/setup.sh base bitcoind vss
	mkdir -p $(BOLTBOX_CACHE)/bench
	$(BENCH_ENV) cargo bench --locked -p boltbox-node --bench store
	cargo bench --locked -p boltbox-executor
	$(BENCH_ENV) cargo bench --locked -p boltbox-node --bench durable_transfers
	$(BENCH_ENV) cargo bench --locked -p boltbox-node --bench accounts
	cargo bench --locked -p boltbox-node --bench backup_seal
	$(BENCH_ENV) cargo bench --locked -p boltbox-tests --bench payments
	cargo bench --locked -p boltbox-tests --bench node_rss
	cargo bench --locked -p boltbox --bench button_latency
	cargo bench --locked -p boltbox --bench account_batch

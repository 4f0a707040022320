#!/usr/bin/env bash
# The whole test suite: unit tests of every crate and the end-to-end suite,
# which starts its own private PostgreSQL and nats-server (installed here with
# apt when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_deps
log "building the services (all features, including crash points)"
cargo build --workspace --all-features --bins --locked
log "running the tests"
cargo test --workspace --all-features --locked "$@"

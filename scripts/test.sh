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
output=$(mktemp)
trap 'rm -f "$output"' EXIT
status=0
cargo test --workspace --all-features --all-targets --locked "$@" 2>&1 | tee "$output" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$output"
exit "$status"

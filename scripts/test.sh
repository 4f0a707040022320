#!/usr/bin/env bash
# The whole test suite: the fast tests beside the code and the end-to-end
# suite, which starts its own private PostgreSQL and nats-server (installed
# here with apt when missing and run as root). The `#[sqlx::test]` tests get a
# private PostgreSQL of their own here, where each creates its database.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_deps
ensure_schemathesis
ensure_promtool
ensure_chromium
log "building the services (all features, including crash points)"
cargo build --workspace --all-features --bins --locked
output=$(mktemp)
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/order-events-sqlx-test.XXXXXX")
trap 'stop_postgres "$pg_dir"; rm -rf "$pg_dir" "$output"' EXIT
pg_port=$(free_port)
log "starting a private PostgreSQL on port $pg_port for the #[sqlx::test] tests"
start_postgres "$pg_dir" "$pg_port"
log "running the tests"
status=0
DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres" \
    cargo test --workspace --all-features --all-targets --locked "$@" 2>&1 | tee "$output" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$output"
exit "$status"

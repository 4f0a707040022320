#!/usr/bin/env bash
# Regenerates .sqlx/, the query data that lets the workspace build without a
# database. Run it after changing a query or a migration.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/sqlx-prepare.sh
#
# DATABASE_URL names any database on a server where you may create databases;
# a scratch database `order_events_sqlx_<pid>` is made there and dropped afterwards,
# so that two checkouts can prepare at once.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

[ -n "${DATABASE_URL:-}" ] || die "set DATABASE_URL to a PostgreSQL server you may create databases on"
scratch="${DATABASE_URL%/*}/order_events_sqlx_$$"
psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS order_events_sqlx_$$" -c "CREATE DATABASE order_events_sqlx_$$"
trap 'psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS order_events_sqlx_$$"' EXIT
apply_migrations "$scratch"

rm -rf .sqlx && mkdir .sqlx
touch order-service/src/lib.rs rewards-service/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$scratch" \
    cargo check --workspace --all-targets --all-features --quiet
log "wrote $(ls .sqlx | wc -l) query files to .sqlx/"

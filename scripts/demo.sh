#!/usr/bin/env bash
# The demo: a private PostgreSQL and nats-server, order-service and
# rewards-service (outbox mode unless --mode says otherwise), three orders
# placed with curl, and the reward points they earned.
#
#   scripts/demo.sh [--mode outbox|cdc|self-read|dual-write] [--cluster] [--keep]
#   scripts/demo.sh --crash
#   scripts/demo.sh --console
#
# --crash places one order per mode into a crash of order-service after the
# order's COMMIT and before any publish (self-read: after the PubAck, before
# the answer), restarts it, retries with the client's key, and prints what
# each mode stored and credited: every pattern credits the order once, the
# dual write loses it.
#
# --console serves the live console (order-events console) on
# http://127.0.0.1:8090/ with every mode running side by side.
#
# --cluster runs three clustered nats-servers (each stream on all three) and
# two instances of each service, kills one node, and places the orders over
# both order-service instances. --keep leaves everything running until
# ctrl-c so that you can place orders yourself; otherwise the demo cleans up
# when it is done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

mode=${ORDER_MODE:-outbox}
keep=0
cluster=0
crash=0
console=0
while [ $# -gt 0 ]; do
    case $1 in
        --mode) mode=$2; shift 2 ;;
        --cluster) cluster=1; shift ;;
        --keep) keep=1; shift ;;
        --crash) crash=1; shift ;;
        --console) console=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

ensure_deps
log "building the services"
cargo build --workspace --all-features --bins --locked --quiet

if [ "$console" = 1 ]; then
    exec target/debug/order-events console --modes outbox,cdc,self-read,dual-write
fi
if [ "$crash" = 1 ]; then
    # The harness starts its own private PostgreSQL and nats-server.
    exec target/debug/crash-demo
fi

work=$(mktemp -d -t order-events-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_postgres "$work/pg"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_port=$(free_port)
log "starting a private PostgreSQL on port $pg_port"
start_postgres "$work/pg" "$pg_port"
for db in orders rewards; do
    "$(postgres_bindir)/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE $db" >/dev/null
done

replicas=()
if [ "$cluster" = 1 ]; then
    nats_ports=("$(free_port)" "$(free_port)" "$(free_port)")
    log "starting three clustered nats-servers (JetStream) on ports ${nats_ports[*]}"
    mapfile -t nats_pids < <(start_nats_cluster "$work/nats" "${nats_ports[@]}")
    pids+=("${nats_pids[@]}")
    nats_url=$(printf 'nats://127.0.0.1:%s,' "${nats_ports[@]}")
    nats_url=${nats_url%,}
    replicas=(STREAM_REPLICAS=3)
    instances=2
else
    nats_port=$(free_port)
    log "starting a private nats-server (JetStream) on port $nats_port"
    pids+=("$(start_nats "$work/nats" "$nats_port")")
    nats_url="nats://127.0.0.1:$nats_port"
    instances=1
fi

# start_service VAR NAME DATABASE [VAR=VALUE...]: starts NAME and sets VAR to
# the URL it listens on. (Not run in a $(...) subshell, so that its pid
# reaches `pids` and the clean-up stops it.)
start_service() {
    local var=$1 name=$2 db=$3 log
    shift 3
    log=$(mktemp "$work/$name.XXXX.log")
    env DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$db" \
        NATS_URL="$nats_url" LISTEN_ADDR=127.0.0.1:0 "${replicas[@]}" "$@" \
        "target/debug/$name" >"$log" 2>&1 &
    pids+=($!)
    wait_for_log "$log" "listening on http://" 60 \
        || { cat "$log" >&2; die "$name did not start"; }
    printf -v "$var" '%s' "$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's/listening on //')"
}

log "starting $instances × order-service in $mode mode and $instances × rewards-service"
orders_all=()
for ((i = 0; i < instances; i++)); do
    start_service url order-service orders ORDER_MODE="$mode"
    orders_all+=("$url")
    start_service rewards rewards-service rewards
    echo "order-service:   $url"
    echo "rewards-service: $rewards"
done
orders=${orders_all[0]}

if [ "$cluster" = 1 ]; then
    log "killing nats-server n1 (kill -9): two of three nodes keep every stream"
    kill -9 "${nats_pids[0]}"
    for url in "${orders_all[@]}"; do
        for ((i = 0; i < 300; i++)); do
            curl -fs "$url/readyz" >/dev/null && break
            sleep 0.1
        done
    done
fi

# place BODY: placed on the next order-service instance with a key of its
# own, and sent again with that key while the answer is a 5xx (a leader
# election, say): the order is placed once however often it is sent.
placed=0
place() {
    local body=$1 url key status
    url=${orders_all[placed % ${#orders_all[@]}]}
    key="demo-$placed-$$"
    placed=$((placed + 1))
    echo "\$ curl -s -X POST $url/orders -H 'content-type: application/json' -H 'Idempotency-Key: $key' -d '$body'"
    for ((attempt = 0; attempt < 20; attempt++)); do
        status=$(curl -s -o "$work/answer" -w '%{http_code}' -X POST "$url/orders" \
            -H 'content-type: application/json' -H "Idempotency-Key: $key" -d "$body")
        [ "${status:0:1}" = 5 ] || break
        echo "($status: sending it again with the same key)"
        sleep 0.5
    done
    cat "$work/answer"
    echo
}
log "placing three orders"
place '{"customer_id":"alice","currency":"EUR","lines":[{"sku":"BOOK-42","quantity":2,"unit_price_minor":1250}]}'
place '{"customer_id":"alice","currency":"EUR","lines":[{"sku":"MUG-7","quantity":1,"unit_price_minor":899},{"sku":"TEA-1","quantity":3,"unit_price_minor":450}]}'
place '{"customer_id":"bob","currency":"JPY","lines":[{"sku":"NOTEBOOK","quantity":4,"unit_price_minor":380}]}'

log "reward points: one per whole currency unit, so alice 25 + 22 = 47 (EUR 25.00 and 22.49), bob 1520 (JPY 1,520)"
# show_rewards CUSTOMER BALANCE: waits (at most 10 s) for the balance, then shows the answer.
show_rewards() {
    local answer=""
    for ((i = 0; i < 100; i++)); do
        answer=$(curl -s "$rewards/customers/$1/rewards")
        grep -q "\"balance\":$2," <<<"$answer" && break
        sleep 0.1
    done
    echo "\$ curl -s $rewards/customers/$1/rewards"
    echo "$answer"
    grep -q "\"balance\":$2," <<<"$answer" || die "$1 has not been credited $2 points"
}
show_rewards alice 47
show_rewards bob 1520

if [ "$keep" = 1 ]; then
    log "running until ctrl-c; logs in $work"
    echo "try: curl -s -X POST $orders/orders -H 'content-type: application/json' -H 'Idempotency-Key: k1' -d '{\"customer_id\":\"carol\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"X\",\"quantity\":1,\"unit_price_minor\":500}]}'"
    echo "then: curl -s $rewards/customers/carol/rewards"
    wait "${pids[@]}"
fi

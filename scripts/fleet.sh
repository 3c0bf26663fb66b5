#!/usr/bin/env bash
# A phone fleet, not only a storm (issue 17, point 3): sipcfg-load --mode fleet against one node, then
# against a three-node cluster (PostgreSQL, HAProxy in TCP mode), and the two reports side by side.
#
#   scripts/fleet.sh                          # 2000 phones, 60 s per run, single node then cluster
#   N=500 DUR=30 RUN=single scripts/fleet.sh  # RUN=single|cluster|both
#
# Each run: a fresh deployment of N Cisco 8851 phones (scripts/gen-inventory.py: SIP OAuth, refresh login
# flow on) with access_token_minutes = ACCESS_MIN (1: phones refresh during the run); activation codes
# for every phone created in bulk through the management API (POST /api/v1/activation-codes/bulk, Accept:
# text/csv, with an operator's API token from `sipcfg admin token`); then the fleet: each phone onboards with
# its code, boots (XMLDefault.cnf.xml, its SEP….cnf.xml and FILES on one new TLS connection), refreshes at
# REFRESH_FRACTION of its access token's lifetime, and every WAVE_EVERY s a wave reboots WAVE_PERCENT % of
# the fleet (If-None-Match). Servers (sipcfg, and in the cluster PostgreSQL and HAProxy too) run on
# SERVER_CORES, the client on CLIENT_CORES: the cluster gets the same CPU as the single node.
#
# Needs python3, curl, openssl, haproxy and PostgreSQL (installed from Debian when missing, as root).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
N=${N:-2000}                         # phones (and devices, and activation codes)
DUR=${DUR:-60}                       # seconds per fleet run
C=${C:-64}                           # operations (onboard, boot, refresh) in flight at once
ONBOARD_RATE=${ONBOARD_RATE:-}       # phones onboarding per second (empty: as fast as C allows)
ACCESS_MIN=${ACCESS_MIN:-1}          # the cluster's access_token_minutes for the run
REFRESH_FRACTION=${REFRESH_FRACTION:-0.5}
WAVE_EVERY=${WAVE_EVERY:-10}         # seconds between reboot waves
WAVE_PERCENT=${WAVE_PERCENT:-10}     # share of the fleet each wave reboots
FILES=${FILES:-RingList.xml,dialplan.xml}
NODES=${NODES:-3}
RUN=${RUN:-both}                     # single | cluster | both
SERVER_CORES=${SERVER_CORES:-0}
CLIENT_CORES=${CLIENT_CORES:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release

say() { printf '\n== %s\n' "$*" >&2; }

# --- What we need from Debian -----------------------------------------------------------------------------
need=()
for c in python3 curl openssl taskset; do command -v "$c" >/dev/null 2>&1 || need+=("$c"); done
if [ "$RUN" != single ]; then
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
install_debian "${need[@]/taskset/util-linux}"

say "building sipcfg and sipcfg-load (release, $TARGET)"
(cd "$ROOT" && cargo build --release -q --bin sipcfg && cargo build --release -q -p sipcfg-load)

WORK=$(mktemp -d /tmp/sipcfg-fleet.XXXXXX)
chmod 755 "$WORK"
PIDS=""; PGDIR=""; PGBIN=""
cleanup() {
    # Only the processes this script started, by their pid.
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $PIDS; do wait "$p" 2>/dev/null || true; done
    if [ -n "$PGDIR" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; return 1
}

say "an inventory of $N phones, access_token_minutes = $ACCESS_MIN"
python3 "$ROOT/scripts/gen-inventory.py" "$N" "$WORK/inventory.toml"
sed -i "s/^access_token_minutes = .*/access_token_minutes = $ACCESS_MIN/" "$WORK/inventory.toml"
token_keys ES256

# config LISTEN CONSOLE EXTRA: one node's configuration on standard output.
config() {
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
tls_handshake_timeout_secs = 10
header_read_timeout_secs = 10
max_connections = 10000
shutdown_grace_secs = 1

[tls]
certificate = "$ROOT/certs-example/server.pem"
private_key = "$ROOT/certs-example/server-key.pem"

EOF
    auth_sections ES256
    deployment_sections
    cat <<EOF
[log]
format = "text"

[cache]
max_bytes = 268435456

[admin]
enabled = false

[console]
listen = "127.0.0.1:$2"

$3
EOF
}

# codes CONFIG CONSOLE_PORT: an operator's API token, then one activation code per phone in bulk (5000 a
# request, the API's limit), as CSV in $WORK/codes.csv.
codes() {
    SIPCFG_LOG=warn "$BIN/sipcfg" admin add -c "$1" fleet --role operator >/dev/null
    local token
    token=$(SIPCFG_LOG=warn "$BIN/sipcfg" admin token -c "$1" fleet)
    python3 - "$WORK/inventory.toml" "$WORK/bulk" <<'EOF'
import json, os, re, sys
names = re.findall(r'^\[devices\.(\w+)\]', open(sys.argv[1]).read(), re.M)
os.makedirs(sys.argv[2], exist_ok=True)
for k in range(0, len(names), 5000):
    with open(os.path.join(sys.argv[2], "%06d.json" % k), "w") as f:
        json.dump({"devices": names[k:k + 5000], "valid_days": 1}, f)
EOF
    : >"$WORK/codes.csv"
    local t0 t1 part
    t0=$(date +%s.%N)
    for part in "$WORK"/bulk/*.json; do
        curl -sS --fail-with-body --cacert "$ROOT/certs-example/ca.pem" --resolve "localhost:$2:127.0.0.1" \
            -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -H 'Accept: text/csv' \
            --data-binary "@$part" "https://localhost:$2/api/v1/activation-codes/bulk" >"$WORK/part.csv"
        if [ -s "$WORK/codes.csv" ]; then tail -n +2 "$WORK/part.csv" >>"$WORK/codes.csv"; else cat "$WORK/part.csv" >"$WORK/codes.csv"; fi
    done
    t1=$(date +%s.%N)
    echo "$(($(wc -l <"$WORK/codes.csv") - 1)) activation codes created in bulk in $(python3 -c "print(f'{$t1-$t0:.2f}')") s" >&2
}

# fleet LABEL PORT PIDS: the fleet run, its JSON report appended to $WORK/results.jsonl.
fleet() {
    local extra=()
    [ -n "$ONBOARD_RATE" ] && extra+=(--onboard-rate "$ONBOARD_RATE")
    taskset -c "$CLIENT_CORES" "$BIN/sipcfg-load" --mode fleet --addr "127.0.0.1:$2" --server-name localhost \
        --ca "$ROOT/certs-example/ca.pem" --codes "$WORK/codes.csv" --phones "$N" --concurrency "$C" \
        --duration "$DUR" --refresh-fraction "$REFRESH_FRACTION" --wave-every "$WAVE_EVERY" \
        --wave-percent "$WAVE_PERCENT" --files "$FILES" --server-pids "$3" --label "$1" --json "${extra[@]}" \
        | tee -a "$WORK/results.jsonl" >/dev/null
    python3 - "$WORK/results.jsonl" "$1" <<'EOF'
import json, sys
ORDER = ["onboard", "boot", "download", "refresh", "reboot", "reboot-wave"]
r = [x for x in map(json.loads, open(sys.argv[1])) if x["label"] == sys.argv[2]][-1]
print(f"\n{r['label']}: fleet of {r['phones']} phones via {r['addr']}, {r['wall_s']:.1f} s, server CPU "
      f"{(r['server_cpu_us'] or 0) / 1e6:.1f} s, client CPU {r['client_cpu_us'] / 1e6:.1f} s")
print(f"  {'phase':<12} {'count':>7} {'ok':>7} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses / errors")
for name in ORDER:
    p = r["phases"][name]
    st = " ".join(f"{k}:{v}" for k, v in p["status"].items())
    ek = " ".join(f"{k}:{v}" for k, v in p["error_kinds"].items())
    print(f"  {name:<12} {p['count']:>7} {p['ok']:>7} {p['errors']:>6} {p['p50_ms']:>8.2f} {p['p90_ms']:>8.2f} "
          f"{p['p99_ms']:>8.2f} {p['max_ms']:>8.2f}  {st} {ek}")
EOF
}

: >"$WORK/results.jsonl"
if [ "$RUN" != cluster ]; then
    say "single node: [state] on SQLite, sipcfg on core(s) $SERVER_CORES"
    mkdir -p "$WORK/single"
    SPORT=$(free_port); SCONSOLE=$(free_port)
    config "$SPORT" "$SCONSOLE" "[state]
database = \"$WORK/single/state.db\"" >"$WORK/single.toml"
    SIPCFG_LOG=warn taskset -c "$SERVER_CORES" "$BIN/sipcfg" serve -c "$WORK/single.toml" 2>"$WORK/single.log" &
    SPID=$!; PIDS="$PIDS $SPID"
    wait_port "$SPORT"; wait_port "$SCONSOLE"
    codes "$WORK/single.toml" "$SCONSOLE"
    say "single node: fleet of $N phones for $DUR s"
    fleet single "$SPORT" "$SPID"
    kill "$SPID"; wait "$SPID" 2>/dev/null || true
fi

if [ "$RUN" != single ]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDIR=$(mktemp -d /tmp/sipcfg-fleet-pg.XXXXXX)
    chown postgres "$PGDIR"; chmod 700 "$PGDIR"
    PGPORT=$(free_port)
    say "cluster: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PGPORT, $NODES nodes, HAProxy"
    # initdb refuses root: the cluster belongs to the postgres user.
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync >/dev/null
    # Durable commits (fsync on, as in production); on the servers' cores.
    taskset -c "$SERVER_CORES" runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -o \
        "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
    PGPASS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    runuser -u postgres -- "$PGBIN/psql" -h "$PGDIR" -p "$PGPORT" -U postgres -q -v ON_ERROR_STOP=1 <<EOT
CREATE ROLE sipcfg LOGIN PASSWORD '$PGPASS';
CREATE DATABASE sipcfg OWNER sipcfg;
EOT
    (umask 077; echo "$PGPASS" >"$WORK/store-password")
    STORE="[store]
url = \"postgres://sipcfg@127.0.0.1:$PGPORT/sipcfg\"
password_file = \"$WORK/store-password\"
key_file = \"$WORK/store.key\""
    BACKENDS=(); CONSOLES=(); NODE_PIDS=()
    for i in $(seq 0 $((NODES - 1))); do
        p=$(free_port); c=$(free_port)
        BACKENDS+=("$p"); CONSOLES+=("$c")
        config "$p" "$c" "$STORE" >"$WORK/node$i.toml"
    done
    say "cluster: moving the $N devices into the shared store (sipcfg store init)"
    SIPCFG_LOG=warn "$BIN/sipcfg" store init -c "$WORK/node0.toml" >&2
    for i in $(seq 0 $((NODES - 1))); do
        SIPCFG_LOG=warn taskset -c "$SERVER_CORES" "$BIN/sipcfg" serve -c "$WORK/node$i.toml" 2>"$WORK/node$i.log" &
        NODE_PIDS+=("$!"); PIDS="$PIDS $!"
    done
    for i in $(seq 0 $((NODES - 1))); do wait_port "${BACKENDS[$i]}"; done
    HPORT=$(free_port)
    {
        printf 'global\n    maxconn 4000\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n'
        printf '    timeout server 60s\n    retries 2\n    option redispatch\n\nlisten sipcfg\n'
        printf '    bind 127.0.0.1:%s\n    balance roundrobin\n' "$HPORT"
        for i in $(seq 0 $((NODES - 1))); do
            printf '    server b%s 127.0.0.1:%s check inter 500ms fall 2 rise 2\n' "$i" "${BACKENDS[$i]}"
        done
    } >"$WORK/haproxy.cfg"
    HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
    taskset -c "$SERVER_CORES" "$HAPROXY" -db -f "$WORK/haproxy.cfg" 2>"$WORK/haproxy.log" &
    HPID=$!; PIDS="$PIDS $HPID"
    wait_port "$HPORT"
    codes "$WORK/node0.toml" "${CONSOLES[0]}"
    # Server CPU: the nodes, HAProxy, and PostgreSQL's postmaster with its processes at the start of the run
    # (the nodes' pool connections are open by then).
    PGMAIN=$(head -1 "$PGDIR/data/postmaster.pid")
    SERVER_PIDS=$(echo "${NODE_PIDS[@]}" "$HPID" "$PGMAIN" $(pgrep -P "$PGMAIN") | tr ' ' ',')
    say "cluster: fleet of $N phones for $DUR s through HAProxy (port $HPORT)"
    fleet cluster "$HPORT" "$SERVER_PIDS"
fi

if [ "$RUN" = both ]; then
    python3 - "$WORK/results.jsonl" <<'EOF'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
s, c = rows["single"], rows["cluster"]
print("\nsingle node vs cluster (through HAProxy): count / errors / p50 / p99 (ms)\n")
print(f"| phase | single count | errors | p50 | p99 | cluster count | errors | p50 | p99 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ["onboard", "boot", "download", "refresh", "reboot", "reboot-wave"]:
    a, b = s["phases"][name], c["phases"][name]
    print(f"| {name} | {a['count']} | {a['errors']} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} "
          f"| {b['count']} | {b['errors']} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} |")
print(f"\nserver CPU: single {(s['server_cpu_us'] or 0) / 1e6:.1f} s, cluster {(c['server_cpu_us'] or 0) / 1e6:.1f} s "
      f"(nodes + HAProxy + PostgreSQL); client CPU {s['client_cpu_us'] / 1e6:.1f} s, {c['client_cpu_us'] / 1e6:.1f} s")
EOF
fi
if [ -n "${KEEP:-}" ]; then echo "raw results: $WORK/results.jsonl" >&2; else echo "(KEEP=1 keeps $WORK and its raw results)" >&2; fi

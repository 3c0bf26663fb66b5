#!/usr/bin/env bash
# Boot storm: sipcfg and nginx side by side on the same machine (issue 6). Runs from a fresh clone:
#
#   scripts/bootstorm.sh                 # 100,000 devices, 12 s per run
#   N=20000 DUR=8 C=64 scripts/bootstorm.sh
#   KA_ROUNDS=21 KA_DUR=3 scripts/bootstorm.sh  # keep-alive (b') as 21 interleaved rounds (default 15 of 3 s)
#   CLUSTER=1 scripts/bootstorm.sh       # and (f): a cluster node (shared store on PostgreSQL) vs a single node
#   CLUSTER=only N=20000 scripts/bootstorm.sh   # (f) alone
#   FLOOR=only N=30000 scripts/bootstorm.sh     # (g) alone: sipcfg (audit log off, then on) beside the floor
#                                               # (N above the phones of one FL_DUR run: tokens verified once)
#
# What it does: installs nginx-light, util-linux (taskset), python3, procps, openssl if missing; builds sipcfg
# and sipcfg-load (release); generates an inventory of N Cisco 8851 phones (SEP + 12 hex) and a config copy
# in a temporary directory (legacy listener off, state off, audit log off, SIPCFG_LOG=warn: nginx runs with
# access_log off); mints N device tokens (sipcfg-load --mint); renders ONE device file with `sipcfg render`
# and copies it under every device name for nginx (which serves static files without authentication);
# starts sipcfg and nginx (one worker) on the same ECDSA P-256 certificate, TLS 1.3 only, no session tickets
# or cache, each pinned to core 0 (SERVER_CORES), and drives each with the same client pinned to core 1
# (CLIENT_CORES): (a) boot storm: one new TLS connection per phone, no resumption, X25519;
# (b) keep-alive revalidation: C kept connections re-checking with If-None-Match (304 on both servers).
# Server CPU = utime+stime of every server process over the run (/proc/<pid>/stat, read by sipcfg-load
# before and after). Then: p99 at 80% of sipcfg's peak storm rate, 1 → 2 server cores, inventory load time,
# cold render of all N configurations on one core, sipcfg's VmRSS after the storm.
# sipcfg pre-renders every configuration at start (cache.prerender): the runs begin once it has finished, and
# run (a0) repeats the storm with the pre-render off, so that every phone is a true cold render.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
N=${N:-100000}                 # devices (and phones, and tokens)
DUR=${DUR:-12}                 # seconds per measured run
C=${C:-64}                     # phones in flight (storm)
KC=${KC:-64}                   # kept connections (keep-alive)
TOKEN_ALG=${TOKEN_ALG:-RS256}  # how the phones' tokens are signed (RS256 as CUCM's, or ES256)
SERVER_CORES=${SERVER_CORES:-0}
CLIENT_CORES=${CLIENT_CORES:-1}
SPORT=${SPORT:-16971}          # sipcfg
NPORT=${NPORT:-16972}          # nginx
CPORT=${CPORT:-16974}          # sipcfg, cluster node (CLUSTER=1)
CADMIN=${CADMIN:-16976}        # its admin listener
PGPORT=${PGPORT:-16975}        # its PostgreSQL
CLUSTER=${CLUSTER:-0}          # 1: also (f) cluster node vs single node; only: (f) alone
CL_ROUNDS=${CL_ROUNDS:-9}      # (f): interleaved storm rounds of CL_DUR seconds
CL_DUR=${CL_DUR:-4}
FLOOR=${FLOOR:-0}              # 1: also (g) sipcfg beside ../shared/tools/floor; only: (g) alone
FL_ROUNDS=${FL_ROUNDS:-9}      # (g): interleaved storm rounds of FL_DUR seconds
FL_DUR=${FL_DUR:-4}
FLOOR_SRC=${FLOOR_SRC:-$ROOT/../shared/tools/floor}
FPORT=${FPORT:-16977}          # the floor, verifying each phone's token
FL_SUITES=${FL_SUITES:-aes128} # (g): TLS 1.3 suites the client offers. The floor takes the client's order and
                               # sipcfg its own (AES-128-GCM first): offering only AES-128-GCM-SHA256 makes
                               # both run the same suite (with `all`, the floor pays SHA-384, ~16% of its CPU)
FL_WARM=${FL_WARM:-6000}       # (g): tokens (the file's last) for a 1 s warm-up of each fresh server
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release

say() { printf '\n== %s\n' "$*" >&2; }

# --- 1. What we need from Debian ---------------------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "$CLUSTER" != 0 ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
    install_debian "${need[@]}"
    # Debian starts the packaged nginx on port 80; it is not part of the benchmark.
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO nginx -s stop 2>/dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$(nproc)" -lt 2 ]; then echo "bootstorm.sh needs 2 cores (server on one, client on the other)" >&2; exit 1; fi

# --- 2. Build ---------------------------------------------------------------------------------------------
say "building sipcfg and sipcfg-load (release, $TARGET)"
# The load client is a workspace member outside the product (tools/sipcfg-load); the workspace shares target/.
(cd "$ROOT" && cargo build --release -q --bin sipcfg && cargo build --release -q -p sipcfg-load)

WORK=$(mktemp -d /tmp/sipcfg-bootstorm.XXXXXX)
chmod 755 "$WORK"
SIPCFG_PID=""; NGINX_PID=""; CLUSTER_PID=""; FLOOR_PID=""; AUDIT_PID=""; PGDIR=""
cleanup() {
    # Only the servers this script started, by their pid.
    for p in $SIPCFG_PID $NGINX_PID $CLUSTER_PID $FLOOR_PID $AUDIT_PID; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$PGDIR" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PGDIR"
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# --- 3. Inventory, configuration, tokens ------------------------------------------------------------------
say "generating an inventory of $N devices in $WORK"
python3 "$ROOT/scripts/gen-inventory.py" "$N" "$WORK/inventory.toml"
token_keys "$TOKEN_ALG"
{
    cat <<EOF
[server]
listen = "127.0.0.1:$SPORT"
tls_handshake_timeout_secs = 10
header_read_timeout_secs = 10
max_connections = 10000
shutdown_grace_secs = 1
reload_poll_ms = 1000

[tls]
certificate = "$ROOT/certs-example/server.pem"
private_key = "$ROOT/certs-example/server-key.pem"
resumption = false              # as nginx below: every phone pays a full handshake

EOF
    auth_sections "$TOKEN_ALG"
    deployment_sections
    cat <<EOF
[log]
format = "text"

[cache]
max_bytes = 268435456
EOF
} >"$WORK/sipcfg.toml"

say "minting $N device tokens"
"$BIN/sipcfg-load" --mint "$N" --config "$WORK/sipcfg.toml" --out "$WORK/tokens.txt" 2>"$WORK/mint.log"
cat "$WORK/mint.log" >&2
LOAD_S=$(sed -n 's/.*loaded in \([0-9.]*\) s.*/\1/p' "$WORK/mint.log")
FIRST=$(head -1 "$WORK/tokens.txt" | cut -d' ' -f1)

say "inventory load + cold render of all $N configurations on one core (sipcfg check)"
t0=$(date +%s.%N)
SIPCFG_LOG=warn taskset -c "$SERVER_CORES" "$BIN/sipcfg" check -c "$WORK/sipcfg.toml" >&2
t1=$(date +%s.%N)
CHECK_S=$(python3 -c "print(f'{$t1-$t0:.2f}')")

say "pre-rendering $N files for nginx (one render, copied per device name)"
mkdir -p "$WORK/www"
"$BIN/sipcfg" render -c "$WORK/sipcfg.toml" "$FIRST.cnf.xml" >"$WORK/one.cnf.xml" 2>/dev/null
python3 - "$WORK/one.cnf.xml" "$WORK/tokens.txt" "$WORK/www" <<'EOF'
import sys, os
body = open(sys.argv[1], "rb").read()
for line in open(sys.argv[2]):
    name = line.split(" ", 1)[0]
    with open(os.path.join(sys.argv[3], name + ".cnf.xml"), "wb") as f:
        f.write(body)
EOF
chmod -R a+rX "$WORK/www"
FILE_BYTES=$(stat -c %s "$WORK/one.cnf.xml")

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    sendfile on;
    etag on;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$NPORT ssl;
        ssl_certificate $ROOT/certs-example/server.pem;
        ssl_certificate_key $ROOT/certs-example/server-key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        # The same suite order as sipcfg: the server's, AES-128-GCM-SHA256 first.
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        root $WORK/www;
        default_type application/xml;
    }
}
EOF

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2; return 1
}

start_sipcfg() { # cores [config]: returns once the pre-render (if on) has finished, so that the runs measure serving
    : >"$WORK/sipcfg-run.log"
    SIPCFG_LOG=warn,sipcfg::app=info taskset -c "$1" "$BIN/sipcfg" serve -c "${2:-$WORK/sipcfg.toml}" \
        2>"$WORK/sipcfg-run.log" &
    SIPCFG_PID=$!
    wait_port "$SPORT"
    if [ -z "${2:-}" ]; then
        for _ in $(seq 1 1200); do grep -q "pre-render" "$WORK/sipcfg-run.log" && break; sleep 0.1; done
        PRERENDER=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/sipcfg-run.log" | grep -o 'pre-render.*' | head -1)
        echo "$PRERENDER" >&2
    fi
    cat "$WORK/sipcfg-run.log" >>"$WORK/sipcfg.log"
}
stop_sipcfg() { kill "$SIPCFG_PID" 2>/dev/null || true; wait "$SIPCFG_PID" 2>/dev/null || true; SIPCFG_PID=""; }

load() { # label port pids mode [extra args...]
    local label=$1 port=$2 pids=$3 mode=$4; shift 4
    taskset -c "$CLIENT_CORES" "$BIN/sipcfg-load" --addr "127.0.0.1:$port" --insecure --tokens "${TOKENS:-$WORK/tokens.txt}" \
        --phones "${PHONES:-$N}" --mode "$mode" --duration "$DUR" --server-pids "$pids" --label "$label" --json "$@" \
        | tee -a "$WORK/results.jsonl"
}

if [ "$CLUSTER" != only ] && [ "$FLOOR" != only ]; then
# --- 4. The runs --------------------------------------------------------------------------------------------
: >"$WORK/results.jsonl"
say "nginx $($NGINX -v 2>&1 | sed 's/.*: //') on core $SERVER_CORES, port $NPORT"
taskset -c "$SERVER_CORES" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
wait_port "$NPORT"
NGINX_PIDS=$(echo "$NGINX_PID" $(pgrep -P "$NGINX_PID") | tr ' ' ',')

say "(a0) sipcfg without pre-render (cache.prerender = false): every phone is a cold render"
sed 's/^max_bytes = .*/&\nprerender = false/' "$WORK/sipcfg.toml" >"$WORK/sipcfg-cold.toml"
start_sipcfg "$SERVER_CORES" "$WORK/sipcfg-cold.toml"
RSS_COLD_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIPCFG_PID/status")
load storm-sipcfg-cold "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" >&2
stop_sipcfg

say "sipcfg on core $SERVER_CORES, port $SPORT: waiting for the pre-render of all $N configurations"
start_sipcfg "$SERVER_CORES"
RSS0_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIPCFG_PID/status")
PRERENDER_S=$(echo "$PRERENDER" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p')
PRERENDER_HELD=$(echo "$PRERENDER" | sed -n 's/.*held=\([0-9]*\).*/\1/p')

say "(a) boot storm, $DUR s each, concurrency $C"
load storm-sipcfg "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" >&2
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIPCFG_PID/status")
load storm-nginx "$NPORT" "$NGINX_PIDS" storm --concurrency "$C" >&2

say "(b) keep-alive revalidation (If-None-Match → 304), $DUR s each, $KC connections"
load keepalive-sipcfg "$SPORT" "$SIPCFG_PID" keepalive --concurrency "$KC" >&2
load keepalive-nginx "$NPORT" "$NGINX_PIDS" keepalive --concurrency "$KC" >&2

KA_ROUNDS=${KA_ROUNDS:-15}; KA_DUR=${KA_DUR:-3}
# Keep-alive runs are short and the VM is noisy: KA_ROUNDS > 1 repeats (b) as rounds of KA_DUR seconds, nginx
# and sipcfg back to back in alternating order, and prints each round's ratio and the medians.
# (b'') the same with full 200 answers: the client never sends If-None-Match (sipcfg-load --full), so each
# request carries the whole file (sipcfg unpacks it from the cache; nginx sends it with sendfile).
KF_ROUNDS=${KF_ROUNDS:-$KA_ROUNDS}
ka_rounds() { # label-prefix rounds [extra keepalive args...]
    local prefix=$1 rounds=$2 i who order; shift 2
    [ "$rounds" -gt 1 ] || return 0
    for i in $(seq 1 "$rounds"); do
        if [ $((i % 2)) = 1 ]; then order="nginx sipcfg"; else order="sipcfg nginx"; fi
        for who in $order; do
            case $who in
                nginx) DUR=$KA_DUR load "$prefix$i-nginx" "$NPORT" "$NGINX_PIDS" keepalive --concurrency "$KC" "$@" >/dev/null ;;
                sipcfg) DUR=$KA_DUR load "$prefix$i-sipcfg" "$SPORT" "$SIPCFG_PID" keepalive --concurrency "$KC" "$@" >/dev/null ;;
            esac
        done
    done
}
[ "$KA_ROUNDS" -gt 1 ] && say "(b') keep-alive, $KA_ROUNDS interleaved rounds of $KA_DUR s"
ka_rounds ka "$KA_ROUNDS"
[ "$KF_ROUNDS" -gt 1 ] && say "(b'') keep-alive full 200 answers, $KF_ROUNDS interleaved rounds of $KA_DUR s"
ka_rounds kf "$KF_ROUNDS" --full

PEAK=$(python3 -c "import json; r=[json.loads(l) for l in open('$WORK/results.jsonl')]; print([x for x in r if x['label']=='storm-sipcfg'][0]['answered_per_s'])")
RATE80=$(python3 -c "print(round(0.8*$PEAK))")
say "(c) boot storm paced at 80% of sipcfg's peak: $RATE80 phones/s"
load paced80-sipcfg "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" --rate "$RATE80" >&2
load paced80-nginx "$NPORT" "$NGINX_PIDS" storm --concurrency "$C" --rate "$RATE80" >&2

stop_sipcfg
say "(d) sipcfg on 2 cores (0,1: shared with the client on core $CLIENT_CORES)"
start_sipcfg "0,1"
load storm-sipcfg-2cores "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" >&2
stop_sipcfg

FULL_KB=0; FULL_RATE=0
if [ "${FULLCACHE:-1}" = 1 ]; then
    say "(e) every one of the $N phones boots once (sipcfg on core $SERVER_CORES), then VmRSS"
    start_sipcfg "$SERVER_CORES"
    taskset -c "$CLIENT_CORES" "$BIN/sipcfg-load" --addr "127.0.0.1:$SPORT" --insecure --tokens "$WORK/tokens.txt" \
        --phones "$N" --mode storm --requests "$N" --concurrency "$C" --server-pids "$SIPCFG_PID" \
        --label full-cache --json | tee -a "$WORK/results.jsonl" >&2
    FULL_KB=$(awk '/VmRSS/ {print $2}' "/proc/$SIPCFG_PID/status")
    stop_sipcfg
fi

# --- 5. Side by side ----------------------------------------------------------------------------------------
python3 - "$WORK/results.jsonl" "$N" "$LOAD_S" "$CHECK_S" "$RSS_KB" "$FILE_BYTES" "$RSS0_KB" "$FULL_KB" \
    "$RSS_COLD_KB" "${PRERENDER_S:-?}" "${PRERENDER_HELD:-0}" <<'EOF'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
n, load_s, check_s, rss_kb, file_bytes, rss0_kb, full_kb, rss_cold_kb, pre_s, pre_held = sys.argv[2:12]
def line(name, s, g, fmt, ratio=None):
    r = "" if ratio is None else f"{ratio:>8.2f}x"
    print(f"| {name:<34} | {fmt.format(s):>12} | {fmt.format(g):>12} | {r:>9} |")
print(f"\nsipcfg vs nginx, {n} devices, file {file_bytes} bytes, server on one core, client on the other\n")
print(f"| {'':<34} | {'sipcfg':>12} | {'nginx':>12} | {'ratio':>9} |")
print(f"|{'-'*36}|{'-'*14}|{'-'*14}|{'-'*11}|")
for mode, title in (("storm", "(a) boot storm"), ("keepalive", "(b) keep-alive 304"), ("paced80", "(c) storm at 80% of sipcfg peak")):
    s, g = rows[f"{mode}-sipcfg"], rows[f"{mode}-nginx"]
    print(f"| **{title}** | | | |")
    line("answered/s", s["answered_per_s"], g["answered_per_s"], "{:.0f}", s["answered_per_s"] / max(g["answered_per_s"], 1e-9))
    for k in ("p50_ms", "p99_ms", "max_ms"):
        line(k.replace("_ms", " latency (ms)"), s[k], g[k], "{:.2f}")
    sc, gc = s["server_cpu_us_per_answer"], g["server_cpu_us_per_answer"]
    line("server CPU µs per answer", sc, gc, "{:.1f}")
    line("capacity (nginx CPU / sipcfg CPU)", "", "", "{}", gc / sc if sc else float("nan"))
    line("server CPU, % of one core", s["server_cpu_us"] / s["wall_s"] / 1e4, g["server_cpu_us"] / g["wall_s"] / 1e4, "{:.0f}")
    line("client CPU, % of one core", s["client_cpu_pct"], g["client_cpu_pct"], "{:.0f}")
    line("statuses", " ".join(f"{k}:{v}" for k, v in s["status"].items()), " ".join(f"{k}:{v}" for k, v in g["status"].items()), "{}")
    line("errors", s["errors"], g["errors"], "{}")
cold, g = rows["storm-sipcfg-cold"], rows["storm-nginx"]
print(f"\n(a0) boot storm without pre-render (every phone a cold render): {cold['answered_per_s']:.0f} phones/s, "
      f"p99 {cold['p99_ms']:.1f} ms, {cold['server_cpu_us_per_answer']:.1f} µs server CPU per phone: capacity "
      f"{g['server_cpu_us_per_answer'] / cold['server_cpu_us_per_answer']:.2f}x nginx's; statuses {cold['status']}")
print(f"pre-render of all {n} configurations at start (one core): {pre_s} s, {int(pre_held)/1048576:.1f} MiB held in the cache")
two = rows["storm-sipcfg-2cores"]
one = rows["storm-sipcfg"]
print(f"\n(d) sipcfg boot storm on cores 0,1 (client shares core 1): {two['answered_per_s']:.0f} phones/s vs "
      f"{one['answered_per_s']:.0f} on one core ({two['answered_per_s']/one['answered_per_s']:.2f}x), "
      f"server CPU {two['server_cpu_us_per_answer']:.1f} µs per phone, client CPU {two['client_cpu_pct']:.0f}%")
print(f"inventory load ({n} devices): {float(load_s):.3f} s;  sipcfg check (load + cold render of all, one core): {check_s} s")
print(f"sipcfg VmRSS: {int(rss_cold_kb)/1024:.0f} MiB after start without pre-render (cache empty); "
      f"{int(rss0_kb)/1024:.0f} MiB after the pre-render (every configuration cached); "
      f"{int(rss_kb)/1024:.0f} MiB after the storm")
import statistics
for prefix, what, answer in (("ka", "(b') keep-alive", "304"), ("kf", "(b'') keep-alive full 200 answers", "200")):
    rounds = sorted({k.split("-")[0] for k in rows if k.startswith(prefix) and k[2:3].isdigit()}, key=lambda k: int(k[2:]))
    if not rounds:
        continue
    cpu = lambda k: rows[k]["server_cpu_us_per_answer"]
    s_us = [cpu(f"{r}-sipcfg") for r in rounds]
    g_us = [cpu(f"{r}-nginx") for r in rounds]
    per = [g / s for s, g in zip(s_us, g_us)]
    bad = {k: rows[k]["status"] for k in rows if k.startswith(prefix) and set(rows[k]["status"]) - {"200", answer}}
    print(f"\n{what}, {len(rounds)} interleaved rounds: server CPU µs per {answer}, sipcfg median "
          f"{statistics.median(s_us):.2f} ({min(s_us):.2f}-{max(s_us):.2f}), nginx median {statistics.median(g_us):.2f} "
          f"({min(g_us):.2f}-{max(g_us):.2f}); per-round capacity {' '.join(f'{x:.2f}' for x in per)}: "
          f"median {statistics.median(per):.2f}x, ratio of medians {statistics.median(g_us) / statistics.median(s_us):.2f}x"
          + (f"; OTHER ANSWERS: {bad}" if bad else ""))
if "full-cache" in rows:
    f = rows["full-cache"]
    print(f"full cache: {f['answered']} phones booted once ({f['status']}, {f['errors']} errors, {f['answered_per_s']:.0f}/s, "
          f"{f['server_cpu_us_per_answer']:.1f} µs server CPU per phone): VmRSS {int(full_kb)/1024:.0f} MiB "
          f"(target: cache bound 256 MiB + 100 MiB = 356 MiB)")
EOF
fi

# --- 6. (f) A cluster node vs a single node -----------------------------------------------------------------
# The same inventory moved into a shared store (PostgreSQL in a temporary folder, its own port), served by a
# node that follows it (LISTEN/NOTIFY, resyncs), beside a single node on the same files. Both on core
# $SERVER_CORES, loaded one at a time in alternating order: downloads never touch PostgreSQL, so the two
# should cost the same per phone (issue 14: within 5%).
if [ "$CLUSTER" != 0 ]; then
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDIR=$(mktemp -d /tmp/sipcfg-bootstorm-pg.XXXXXX)
    chown postgres "$PGDIR"; chmod 700 "$PGDIR"
    say "(f) PostgreSQL $("$PGBIN/postgres" --version | sed 's/.* //') on port $PGPORT, in $PGDIR"
    # initdb refuses root: the cluster belongs to the postgres user.
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -o \
        "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    PGPASS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    runuser -u postgres -- "$PGBIN/psql" -h "$PGDIR" -p "$PGPORT" -U postgres -q -v ON_ERROR_STOP=1 <<EOT
CREATE ROLE sipcfg LOGIN PASSWORD '$PGPASS';
CREATE DATABASE sipcfg OWNER sipcfg;
EOT
    (umask 077; echo "$PGPASS" >"$WORK/store-password")
    sed "s/^listen = \"127.0.0.1:$SPORT\"/listen = \"127.0.0.1:$CPORT\"/" "$WORK/sipcfg.toml" >"$WORK/sipcfg-cluster.toml"
    cat >>"$WORK/sipcfg-cluster.toml" <<EOT

[store]
url = "postgres://sipcfg@127.0.0.1:$PGPORT/sipcfg"
password_file = "$WORK/store-password"
key_file = "$WORK/store.key"
EOT
    say "(f) moving the $N devices into the shared store (sipcfg store init)"
    SIPCFG_LOG=warn "$BIN/sipcfg" store init -c "$WORK/sipcfg-cluster.toml" >&2
    if [ -z "$SIPCFG_PID" ]; then start_sipcfg "$SERVER_CORES"; fi
    : >"$WORK/cluster-run.log"
    # Its own admin port: the single node holds the default one.
    SIPCFG_LOG=warn,sipcfg::app=info taskset -c "$SERVER_CORES" "$BIN/sipcfg" serve -c "$WORK/sipcfg-cluster.toml" \
        --admin-listen "127.0.0.1:$CADMIN" 2>"$WORK/cluster-run.log" &
    CLUSTER_PID=$!
    wait_port "$CPORT" || { cat "$WORK/cluster-run.log" >&2; exit 1; }
    for _ in $(seq 1 1200); do grep -q "pre-render" "$WORK/cluster-run.log" && break; sleep 0.1; done
    say "(f) storm, $CL_ROUNDS interleaved rounds of $CL_DUR s: single node (port $SPORT), cluster node ($CPORT)"
    for i in $(seq 1 "$CL_ROUNDS"); do
        if [ $((i % 2)) = 1 ]; then
            DUR=$CL_DUR load "cl$i-single" "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" >/dev/null
            DUR=$CL_DUR load "cl$i-cluster" "$CPORT" "$CLUSTER_PID" storm --concurrency "$C" >/dev/null
        else
            DUR=$CL_DUR load "cl$i-cluster" "$CPORT" "$CLUSTER_PID" storm --concurrency "$C" >/dev/null
            DUR=$CL_DUR load "cl$i-single" "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" >/dev/null
        fi
    done
    python3 - "$WORK/results.jsonl" <<'EOT'
import json, statistics, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
rounds = sorted({k.split("-")[0] for k in rows if k.startswith("cl")}, key=lambda k: int(k[2:]))
cpu = lambda k: rows[k]["server_cpu_us_per_answer"]
single = [cpu(f"{r}-single") for r in rounds]
cluster = [cpu(f"{r}-cluster") for r in rounds]
per = [s / c for s, c in zip(single, cluster)]
bad = {k: rows[k]["status"] for k in rows if k.startswith("cl") and (rows[k]["errors"] or set(rows[k]["status"]) - {"200"})}
rate = lambda side: statistics.median(rows[f"{r}-{side}"]["answered_per_s"] for r in rounds)
print(f"\n(f) boot storm, cluster node vs single node, {len(rounds)} interleaved rounds: server CPU µs per phone, "
      f"single median {statistics.median(single):.1f} ({min(single):.1f}-{max(single):.1f}), cluster median "
      f"{statistics.median(cluster):.1f} ({min(cluster):.1f}-{max(cluster):.1f}); capacity of the cluster node "
      f"relative to the single node per round {' '.join(f'{x:.3f}' for x in per)}: median "
      f"{statistics.median(per):.3f}x, ratio of medians {statistics.median(single) / statistics.median(cluster):.3f}x; "
      f"answered/s median single {rate('single'):.0f}, cluster {rate('cluster'):.0f}"
      + (f"; NON-200 ANSWERS: {bad}" if bad else ""))
EOT
fi

# --- 7. (g) The floor -------------------------------------------------------------------------------------------
# ../shared/tools/floor: accept, TLS 1.3 (the same certificate), one request, the token verified (the same public
# key), a fixed answer of the file's size, close: the least a Rust server spends per boot-storm phone. sipcfg runs
# as measured above (audit log off) and as an administrator runs it (audit log on); all three on core
# $SERVER_CORES, loaded one at a time in rotating order, FL_ROUNDS rounds of FL_DUR seconds.
if [ "$FLOOR" != 0 ]; then
    if [ ! -f "$FLOOR_SRC/Cargo.toml" ]; then
        echo "(g) skipped: no floor at $FLOOR_SRC (set FLOOR_SRC)" >&2
    else
        say "(g) building the floor ($FLOOR_SRC)"
        CARGO_TARGET_DIR="$TARGET/floor" cargo build -q --release --manifest-path "$FLOOR_SRC/Cargo.toml"
        [ -n "${FILE_BYTES:-}" ] || FILE_BYTES=$(stat -c %s "$WORK/one.cnf.xml")
        if [ -z "$SIPCFG_PID" ]; then start_sipcfg "$SERVER_CORES"; fi
        mkdir -p "$WORK/audit"
        sed "s/^listen = \"127.0.0.1:$SPORT\"/listen = \"127.0.0.1:$CPORT\"/" "$WORK/sipcfg.toml" \
            | sed "s#^\[log\]#[log]\naudit_file = \"$WORK/audit/audit.log\"#" >"$WORK/sipcfg-audit.toml"
        grep -q '^audit_file' "$WORK/sipcfg-audit.toml" || printf '\n[log]\naudit_file = "%s"\n' "$WORK/audit/audit.log" >>"$WORK/sipcfg-audit.toml"
        start_audit() {
            SIPCFG_LOG=warn,sipcfg::app=info taskset -c "$SERVER_CORES" "$BIN/sipcfg" serve -c "$WORK/sipcfg-audit.toml" \
                --admin-listen "127.0.0.1:$CADMIN" 2>"$WORK/audit-run.log" &
            AUDIT_PID=$!
            wait_port "$CPORT" || { cat "$WORK/audit-run.log" >&2; exit 1; }
            for _ in $(seq 1 1200); do grep -q "pre-render" "$WORK/audit-run.log" && break; sleep 0.1; done
        }
        # Every round starts the three servers afresh: each phone's token is then verified once, as in a real
        # boot storm, and not found in the verification cache of an earlier round (the floor keeps none). Each
        # is warmed up for a second with other tokens (the file's last FL_WARM), so that no server's first
        # page faults and allocations fall in the measured run; the measured runs take the first N - FL_WARM.
        tail -n "$FL_WARM" "$WORK/tokens.txt" >"$WORK/warm-tokens.txt"
        start_floor() {
            taskset -c "$SERVER_CORES" "$TARGET/floor/release/floor" "$ROOT/certs-example/server.pem" \
                "$ROOT/certs-example/server-key.pem" "$FPORT" "$FILE_BYTES" "$TOKEN_PUB" &
            FLOOR_PID=$!
            wait_port "$FPORT"
        }
        warm() { # port pid
            DUR=1 TOKENS=$WORK/warm-tokens.txt PHONES=$FL_WARM load warm "$1" "$2" storm --concurrency "$C" \
                --suites "$FL_SUITES" >/dev/null
        }
        fresh() {
            stop_sipcfg; kill "$AUDIT_PID" "$FLOOR_PID" 2>/dev/null || true
            wait "$AUDIT_PID" "$FLOOR_PID" 2>/dev/null || true
            start_sipcfg "$SERVER_CORES" 2>/dev/null; start_audit; start_floor
            warm "$SPORT" "$SIPCFG_PID"; warm "$CPORT" "$AUDIT_PID"; warm "$FPORT" "$FLOOR_PID"
        }
        start_audit
        say "(g) storm, $FL_ROUNDS rounds of $FL_DUR s, TLS suites offered: $FL_SUITES: sipcfg ($SPORT), sipcfg with the audit log ($CPORT), the floor verifying tokens ($FPORT)"
        FLARGS="--suites $FL_SUITES"
        PHONES=$((N - FL_WARM))
        for i in $(seq 1 "$FL_ROUNDS"); do
            fresh
            case $((i % 3)) in
                1) order="sipcfg audit floor" ;;
                2) order="floor sipcfg audit" ;;
                *) order="audit floor sipcfg" ;;
            esac
            for who in $order; do
                case $who in
                    sipcfg) DUR=$FL_DUR load "fl$i-sipcfg" "$SPORT" "$SIPCFG_PID" storm --concurrency "$C" $FLARGS >/dev/null ;;
                    audit) DUR=$FL_DUR load "fl$i-audit" "$CPORT" "$AUDIT_PID" storm --concurrency "$C" $FLARGS >/dev/null ;;
                    floor) DUR=$FL_DUR load "fl$i-floor" "$FPORT" "$FLOOR_PID" storm --concurrency "$C" $FLARGS >/dev/null ;;
                esac
            done
        done
        kill "$FLOOR_PID" "$AUDIT_PID" 2>/dev/null || true
        python3 - "$WORK/results.jsonl" <<'EOT'
import json, statistics, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
rounds = sorted({k.split("-")[0] for k in rows if k.startswith("fl")}, key=lambda k: int(k[2:]))
cpu = lambda k: rows[k]["server_cpu_us_per_answer"]
med = lambda who: statistics.median(cpu(f"{r}-{who}") for r in rounds)
per = lambda who: [cpu(f"{r}-{who}") / cpu(f"{r}-floor") for r in rounds]
bad = {k: rows[k]["status"] for k in rows if k.startswith("fl") and (rows[k]["errors"] or set(rows[k]["status"]) - {"200"})}
print(f"\n(g) boot storm beside the floor (accept, TLS 1.3, one token verification, fixed answer), {len(rounds)} rounds: "
      f"server CPU µs per phone, median: floor {med('floor'):.1f}, sipcfg {med('sipcfg'):.1f}, sipcfg with the audit log "
      f"{med('audit'):.1f}. sipcfg / floor per round {' '.join(f'{x:.3f}' for x in per('sipcfg'))}: median "
      f"{statistics.median(per('sipcfg')):.3f}x (target 1.10x); with the audit log median "
      f"{statistics.median(per('audit')):.3f}x (target 1.20x)" + (f"; NON-200 ANSWERS: {bad}" if bad else ""))
EOT
    fi
fi

if [ -n "${KEEP:-}" ]; then echo "raw results: $WORK/results.jsonl" >&2; else echo "(KEEP=1 keeps $WORK and its raw results)" >&2; fi

#!/usr/bin/env bash
# User-space instructions per keep-alive revalidation (a 304 over a kept TLS connection), counted by
# valgrind's callgrind. Unlike CPU time on a shared VM (±20% from run to run), the count repeats to within a
# fraction of a percent, so it shows what a change to the hot path gains. It does not count the kernel's work
# (about half of a 304's CPU time on loopback) and says nothing about nginx: bootstorm.sh compares the servers.
#
#   scripts/instructions.sh                        # the working tree's release build
#   BINS="/tmp/old/sipcfg target/release/sipcfg" scripts/instructions.sh   # several builds, same inventory
#   AUDIT=1 scripts/instructions.sh                # with the audit log on ([log] audit_file): a line per 304
#   EXTRA=$'[observe]\nenabled = true' scripts/instructions.sh   # more configuration (for builds that know it)
#
# Each sipcfg runs under callgrind with instrumentation off until it has loaded and pre-rendered N devices;
# sipcfg-load then makes three keep-alive runs of R1, R2 and R3 requests over KC connections, with a dump
# after each. Instructions per 304 = (count of run 3 - count of run 2) / (R3 - R2): the connections' TLS
# handshakes and first requests cancel out. Run 1 warms the server up (lazy initialisation, first-use paths).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
N=${N:-1000}
KC=${KC:-16}
R1=${R1:-2000}; R2=${R2:-12000}; R3=${R3:-22000}
PORT=${PORT:-16981}
TOKEN_ALG=${TOKEN_ALG:-RS256}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf '== %s\n' "$*" >&2; }

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
install_debian "${need[@]}"

say "building sipcfg and sipcfg-load (release, $TARGET)"
# The load client is a workspace member outside the product (tools/sipcfg-load); the workspace shares target/.
(cd "$ROOT" && cargo build --release -q --bin sipcfg && cargo build --release -q -p sipcfg-load)
LOAD=$TARGET/release/sipcfg-load
BINS=${BINS:-$TARGET/release/sipcfg}

WORK=$(mktemp -d /tmp/sipcfg-instructions.XXXXXX)
SERVER=""
cleanup() {
    [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$ROOT/scripts/gen-inventory.py" "$N" "$WORK/inventory.toml"
token_keys "$TOKEN_ALG"
{
    cat <<EOF
[server]
listen = "127.0.0.1:$PORT"

[tls]
certificate = "$ROOT/certs-example/server.pem"
private_key = "$ROOT/certs-example/server-key.pem"
resumption = false

EOF
    auth_sections "$TOKEN_ALG"
    deployment_sections
    cat <<EOF
[admin]
enabled = false

EOF
    if [ -n "${AUDIT:-}" ]; then
        printf '[log]\naudit_file = "%s"\n\n' "$WORK/audit.log"
    fi
    if [ -n "${EXTRA:-}" ]; then
        printf '%s\n' "$EXTRA"
    fi
} >"$WORK/sipcfg.toml"
"$LOAD" --mint "$N" --config "$WORK/sipcfg.toml" --out "$WORK/tokens.txt" 2>"$WORK/mint.log"

load() {
    "$LOAD" --addr "127.0.0.1:$PORT" --insecure --tokens "$WORK/tokens.txt" --phones "$N" --mode keepalive \
        --requests "$1" --concurrency "$KC" --json >"$WORK/load.json"
    python3 - "$WORK/load.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
want = int(sys.argv[2])
if r["errors"] or sum(r["status"].values()) != want:
    sys.exit(f"load run of {want}: statuses {r['status']}, {r['errors']} errors")
PY
}

totals() { grep -E '^totals:' "$1" | awk '{print $2}'; }

for bin in $BINS; do
    out=$WORK/callgrind.out
    rm -f "$out"* "$WORK/audit.log"
    SIPCFG_LOG=warn,sipcfg::app=info valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$bin" serve -c "$WORK/sipcfg.toml" 2>"$WORK/server.log" &
    SERVER=$!
    for _ in $(seq 1 1200); do
        grep -q "pre-render" "$WORK/server.log" 2>/dev/null && break
        kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
        sleep 0.25
    done
    sleep 1
    callgrind_control -i on "$SERVER" >/dev/null 2>&1
    for r in "$R1" "$R2" "$R3"; do
        load "$r"
        callgrind_control -d "$SERVER" >/dev/null 2>&1
    done
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
    if [ -n "${AUDIT:-}" ]; then
        # Every request of the three runs has its line (a build that drops lines shows here).
        lines=$(wc -l <"$WORK/audit.log")
        say "$bin: $lines audit lines for $((R1 + R2 + R3)) requests"
    fi
    c2=$(totals "$out.2"); c3=$(totals "$out.3")
    python3 - "$bin" "$c2" "$c3" "$R2" "$R3" <<'PY'
import sys
bin, c2, c3, r2, r3 = sys.argv[1], *map(int, sys.argv[2:])
per = (c3 - c2) / (r3 - r2)
print(f"{bin}: {per:,.0f} user-space instructions per keep-alive 304 "
      f"(runs of {r2:,} and {r3:,} requests: {c2:,} and {c3:,} instructions)")
PY
    [ -z "${KEEP:-}" ] || cp "$out.3" "$WORK/callgrind.$(basename "$bin").$$"
done

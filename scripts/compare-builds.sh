#!/usr/bin/env bash
# Several builds of sipcfg side by side, in one run: a change is judged against the build before it, not
# against figures measured another day on this noisy, shared VM.
#
#   BINS="/tmp/old/sipcfg target/release/sipcfg" scripts/compare-builds.sh
#   N=20000 ROUNDS=15 DUR=3 BINS="a b c" scripts/compare-builds.sh
#
# Every build serves the same generated inventory of N phones (RS256 tokens, as CUCM signs them) on its own
# port, all pinned to core 0 (SERVER_CORES) and started before the first round; the load client runs on
# core 1. Then ROUNDS rounds, each driving every build once in turn (the order rotates from round to round):
# (a) boot storm: a new TLS 1.3 connection per phone, one download each; (b) keep-alive: KC kept connections
# revalidating with If-None-Match (304). Reported: each build's median server CPU per answer over the
# rounds, and per round its ratio to the first build (>1: the first build spends more).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"
N=${N:-20000}
ROUNDS=${ROUNDS:-11}
DUR=${DUR:-3}
C=${C:-64}
KC=${KC:-64}
TOKEN_ALG=${TOKEN_ALG:-RS256}
SERVER_CORES=${SERVER_CORES:-0}
CLIENT_CORES=${CLIENT_CORES:-1}
BASE_PORT=${BASE_PORT:-17071}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf '\n== %s\n' "$*" >&2; }

need=()
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
install_debian "${need[@]}"

say "building sipcfg-load (release, $TARGET)"
(cd "$ROOT" && cargo build --release -q -p sipcfg-load)
LOAD=$TARGET/release/sipcfg-load
if [ -z "${BINS:-}" ]; then
    (cd "$ROOT" && cargo build --release -q --bin sipcfg)
    BINS=$TARGET/release/sipcfg
fi
read -r -a builds <<<"$BINS"

WORK=$(mktemp -d /tmp/sipcfg-compare.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

python3 "$ROOT/scripts/gen-inventory.py" "$N" "$WORK/inventory.toml"
token_keys "$TOKEN_ALG"
config() { # port
    cat <<EOF
[server]
listen = "127.0.0.1:$1"

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
}
config "$BASE_PORT" >"$WORK/mint.toml"
"$LOAD" --mint "$N" --config "$WORK/mint.toml" --out "$WORK/tokens.txt" 2>"$WORK/mint.log"

for i in "${!builds[@]}"; do
    port=$((BASE_PORT + i))
    config "$port" >"$WORK/sipcfg-$i.toml"
    SIPCFG_LOG=warn,sipcfg::app=info taskset -c "$SERVER_CORES" "${builds[$i]}" serve -c "$WORK/sipcfg-$i.toml" \
        2>"$WORK/server-$i.log" &
    PIDS+=($!)
    for _ in $(seq 1 1200); do
        grep -q "pre-render" "$WORK/server-$i.log" 2>/dev/null && break
        kill -0 "${PIDS[$i]}" 2>/dev/null || { cat "$WORK/server-$i.log" >&2; exit 1; }
        sleep 0.25
    done
    say "build $i: ${builds[$i]} on port $port ($("${builds[$i]}" --version))"
done

: >"$WORK/results.jsonl"
for r in $(seq 1 "$ROUNDS"); do
    for k in "${!builds[@]}"; do
        i=$(( (k + r) % ${#builds[@]} ))
        port=$((BASE_PORT + i))
        for mode in storm keepalive; do
            conc=$C; [ "$mode" = keepalive ] && conc=$KC
            taskset -c "$CLIENT_CORES" "$LOAD" --addr "127.0.0.1:$port" --insecure --tokens "$WORK/tokens.txt" \
                --phones "$N" --mode "$mode" --duration "$DUR" --concurrency "$conc" --server-pids "${PIDS[$i]}" \
                --label "$mode-$r-$i" --json >>"$WORK/results.jsonl"
        done
    done
    printf '.' >&2
done
echo >&2

python3 - "$WORK/results.jsonl" "${#builds[@]}" "$ROUNDS" "${builds[@]}" <<'EOF'
import json, statistics, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
n, rounds, names = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
bad = [k for k, r in rows.items() if r["errors"] or any(not s.startswith(("200", "304")) for s in r["status"])]
if bad:
    print("runs with errors or unexpected statuses:", ", ".join(bad))
for mode, what in (("storm", "boot storm (new TLS connection per phone)"), ("keepalive", "keep-alive 304")):
    print(f"\n{what}: server CPU µs per answer, median of {rounds} interleaved rounds (range)")
    cpu = {i: [rows[f"{mode}-{r}-{i}"]["server_cpu_us_per_answer"] for r in range(1, rounds + 1)] for i in range(n)}
    for i in range(n):
        per_round = [cpu[0][r] / cpu[i][r] for r in range(rounds)]
        print(f"  build {i} {names[i]}: {statistics.median(cpu[i]):.1f} µs ({min(cpu[i]):.1f}-{max(cpu[i]):.1f}); "
              f"capacity vs build 0: median of per-round ratios {statistics.median(per_round):.3f}, "
              f"ratio of medians {statistics.median(cpu[0]) / statistics.median(cpu[i]):.3f}")
EOF

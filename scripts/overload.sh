#!/usr/bin/env bash
# Past capacity, gracefully (issue 17.2): sipcfg's capacity in a closed-loop boot storm, then an OPEN-LOOP
# storm at OVER x that capacity (new phones arrive at a fixed rate whatever the server answers), then the load
# falls to AFTER x. Reports, per second and per phase, the phones served (200), shed (503, or reset before
# their handshake), the p50/p99 latency of the served from their arrival, the server's peak memory (VmHWM)
# and in-flight metrics, and how soon after the load fell service was whole again.
#
#   scripts/overload.sh                        # N=20000 DUR=5 OVER=3 OVER_S=15 AFTER=0.5 AFTER_S=10
#   MAX_IN_FLIGHT=1000000 scripts/overload.sh  # the same without an effective bound, for comparison
#   CERT=rsa scripts/overload.sh               # an RSA-2048 server certificate: the client can then offer 3x
#
# The server on core 0, the client (sipcfg-load --mode open) on core 1, as scripts/bootstorm.sh does;
# RS256 tokens, pre-rendered configurations, no TLS resumption (every phone pays a full handshake).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-20000}                 # distinct phones (tokens)
DUR=${DUR:-5}                 # seconds of the closed-loop capacity run
C=${C:-64}                    # phones in flight in the capacity run
OVER=${OVER:-3}               # offered load in the overload phase, times capacity
OVER_S=${OVER_S:-15}
AFTER=${AFTER:-0.5}           # then this, times capacity
AFTER_S=${AFTER_S:-10}
RATE=${RATE:-}                # capacity to use instead of measuring it (phones/s)
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-}  # server.max_in_flight; default: the server's own (256 per CPU it may use)
MAX_OUT=${MAX_OUT:-4000}      # the client's bound on phones in progress
TOKEN_ALG=${TOKEN_ALG:-RS256}
CERT=${CERT:-ecdsa}           # ecdsa: the example's P-256 certificate; rsa: an RSA-2048 one, as CUCM's own (a
                              # handshake costs the server ~3x more and the client the same, so that the one
                              # client core can offer 3x without being the bottleneck itself)
SERVER_CORES=${SERVER_CORES:-0}
CLIENT_CORES=${CLIENT_CORES:-1}
SPORT=${SPORT:-16981}
APORT=${APORT:-16983}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
say() { printf '\n== %s\n' "$*" >&2; }

for c in taskset python3 openssl; do command -v $c >/dev/null || { echo "overload.sh needs $c" >&2; exit 1; }; done
say "building sipcfg and sipcfg-load (release, $TARGET)"
(cd "$ROOT" && cargo build --release -q --bin sipcfg && cargo build --release -q -p sipcfg-load)

WORK=$(mktemp -d /tmp/sipcfg-overload.XXXXXX)
SIPCFG_PID=""
cleanup() {
    [ -n "$SIPCFG_PID" ] && kill "$SIPCFG_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

case $CERT in
    ecdsa) CERT_PEM=$ROOT/certs-example/server.pem; KEY_PEM=$ROOT/certs-example/server-key.pem ;;
    rsa)
        CERT_PEM=$WORK/server-rsa.pem; KEY_PEM=$WORK/server-rsa-key.pem
        # Issued by the example CA, which the example's Phone-Edge-Trust holds (sipcfg checks that at start).
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEY_PEM" 2>/dev/null
        openssl req -new -key "$KEY_PEM" -subj "/O=sipcfg benchmark/CN=localhost" -out "$WORK/rsa.csr"
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/rsa.ext"
        openssl x509 -req -in "$WORK/rsa.csr" -CA "$ROOT/certs-example/ca.pem" -CAkey "$ROOT/certs-example/ca-key.pem" \
            -CAcreateserial -CAserial "$WORK/ca.srl" -sha256 -days 2 -extfile "$WORK/rsa.ext" -out "$CERT_PEM" 2>/dev/null ;;
    *) echo "CERT must be ecdsa or rsa" >&2; exit 2 ;;
esac
say "inventory of $N devices, configuration and tokens in $WORK"
python3 "$ROOT/scripts/gen-inventory.py" "$N" "$WORK/inventory.toml"
token_keys "$TOKEN_ALG"
{
    cat <<EOT
[server]
listen = "127.0.0.1:$SPORT"
max_connections = 10000
shutdown_grace_secs = 1
EOT
    [ -n "$MAX_IN_FLIGHT" ] && echo "max_in_flight = $MAX_IN_FLIGHT"
    cat <<EOT

[admin]
listen = "127.0.0.1:$APORT"

[tls]
certificate = "$CERT_PEM"
private_key = "$KEY_PEM"
resumption = false

EOT
    auth_sections "$TOKEN_ALG"
    deployment_sections
    cat <<EOT
[log]
format = "text"

[cache]
max_bytes = 268435456
EOT
} >"$WORK/sipcfg.toml"
"$BIN/sipcfg-load" --mint "$N" --config "$WORK/sipcfg.toml" --out "$WORK/tokens.txt" 2>/dev/null

say "sipcfg on core $SERVER_CORES"
SIPCFG_LOG=warn,sipcfg::app=info taskset -c "$SERVER_CORES" "$BIN/sipcfg" serve -c "$WORK/sipcfg.toml" \
    2>"$WORK/sipcfg.log" &
SIPCFG_PID=$!
for _ in $(seq 1 1200); do
    grep -q "pre-render" "$WORK/sipcfg.log" && break
    kill -0 "$SIPCFG_PID" 2>/dev/null || { echo "sipcfg did not start:" >&2; cat "$WORK/sipcfg.log" >&2; exit 1; }
    sleep 0.1
done
sleep 0.5
metric() { curl -s "http://127.0.0.1:$APORT/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
echo "in-flight bound: $(metric sipcfg_in_flight_limit) (handshakes $(metric sipcfg_in_flight_handshake_limit))" >&2
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$SIPCFG_PID/stat"; }
hwm() { awk '/VmHWM|VmRSS/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/$SIPCFG_PID/status"; echo; }
echo "memory before: $(hwm)" >&2

load() {
    taskset -c "$CLIENT_CORES" "$BIN/sipcfg-load" --addr "127.0.0.1:$SPORT" --insecure --tokens "$WORK/tokens.txt" \
        --phones "$N" "$@"
}
if [ -z "$RATE" ]; then
    say "capacity: closed-loop storm, $C phones in flight, $DUR s"
    load --mode storm --concurrency "$C" --duration "$DUR" --server-pids "$SIPCFG_PID" --json | tee "$WORK/capacity.json"
    RATE=$(python3 -c "import json,sys; print(round(json.load(open('$WORK/capacity.json'))['answered_per_s']))")
fi
HIGH=$(python3 -c "print(round($RATE * $OVER))")
LOW=$(python3 -c "print(round($RATE * $AFTER))")
say "open loop: $HIGH phones/s (${OVER}x $RATE) for $OVER_S s, then $LOW/s (${AFTER}x) for $AFTER_S s"
# The server's threads and in-flight gauges every 0.5 s, in the background.
( while kill -0 "$SIPCFG_PID" 2>/dev/null; do
    echo "$(date +%s.%N | cut -c1-14) in_flight=$(metric sipcfg_in_flight) handshakes=$(metric sipcfg_in_flight_handshakes) cpu_ticks=$(ticks) $(hwm)"
    sleep 0.5
  done >"$WORK/gauges.log" ) &
GAUGES=$!
T0=$(ticks); S0=$(date +%s.%N)
load --mode open --schedule "$HIGH:$OVER_S,$LOW:$AFTER_S" --max-outstanding "$MAX_OUT" --json | tee "$WORK/open.txt"
kill "$GAUGES" 2>/dev/null || true
python3 -c "print(f'server CPU over the open-loop run: {($(ticks) - $T0) / ($(date +%s.%N) - $S0):.0f}% of one core')" >&2
echo "server CPU per 0.5 s sample (ticks of 10 ms): $(awk -F'cpu_ticks=' '{ split($2, a, " "); if (p != "") printf "%d ", a[1] - p; p = a[1] }' "$WORK/gauges.log")" >&2
say "server after the run"
if kill -0 "$SIPCFG_PID" 2>/dev/null; then echo "alive: yes" >&2; else echo "alive: NO (crashed)" >&2; fi
echo "memory: $(hwm)" >&2
curl -s "http://127.0.0.1:$APORT/metrics" | grep -E '^sipcfg_(in_flight|shed_total|open_connections|tls_handshake_failures)' >&2 || true
sort -t= -k2 -n "$WORK/gauges.log" | tail -1 | sed 's/^/peak in_flight sample: /' >&2

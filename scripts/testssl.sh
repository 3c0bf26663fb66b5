#!/usr/bin/env bash
# Scans sipcfg's HTTPS listener with testssl.sh and prints a summary by severity.
#
#   target/release/sipcfg serve &                 # the example deployment on localhost:6971
#   scripts/testssl.sh                            # or: scripts/testssl.sh localhost:16971
#   scripts/testssl.sh phones.example.net:6971 -p -S   # extra arguments go to testssl (default: full scan)
#   scripts/testssl.sh '[::1]:6971'                     # IPv6 literals in brackets
#
# Made for an offline machine: no DNS queries at all (the address comes from the local resolver, i.e.
# /etc/hosts, via getent, and is passed with --ip), no OCSP or CRL fetches (testssl's --phone-out is not
# given), the example CA added to the trust stores (--add-ca). Output: the full text log and testssl's flat
# JSON (every finding with its severity) in $TESTSSL_OUT (default target/testssl/), and on stdout the count
# of findings per severity, every finding above INFO, and the highest severity.
#
# Environment:
#   TESTSSL_CA      CA file(s) to trust, comma separated (default certs-example/ca.pem; "none" for no --add-ca)
#   TESTSSL_IP      address to test (default: the first address getent finds for the host, IPv4 first)
#   TESTSSL_OUT     output folder (default target/testssl)
#   TESTSSL_MAX     highest severity that still exits 0 (default LOW); above it the script exits 1
#
# Exit status: 0 when no finding is above TESTSSL_MAX, 1 when one is, 2 when the scan could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "scripts/testssl.sh: $*" >&2; exit 2; }

target=${1:-localhost:6971}
[ $# -gt 0 ] && shift
host=${target%:*}
port=${target##*:}
[ "$host" = "$target" ] && port=6971
host=${host#[}
host=${host%]}
ca=${TESTSSL_CA:-certs-example/ca.pem}
out=${TESTSSL_OUT:-target/testssl}
max=${TESTSSL_MAX:-LOW}


# testssl.sh: Debian ships it as the package testssl.sh with the command `testssl`; jq reads its JSON.
install_pkg() {
  command -v apt-get >/dev/null || die "$1 is not installed and apt-get is not available"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing $1…" >&2
  "${sudo[@]}" apt-get install -y "$1" >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y "$1" >/dev/null; } ||
    die "apt-get install $1 failed"
}
find_testssl() { command -v testssl || command -v testssl.sh || true; }
testssl=$(find_testssl)
if [ -z "$testssl" ]; then
  install_pkg testssl.sh
  testssl=$(find_testssl)
  [ -n "$testssl" ] || die "the package testssl.sh is installed but there is no testssl command"
fi
command -v jq >/dev/null || install_pkg jq

order='["OK","INFO","LOW","MEDIUM","HIGH","CRITICAL"]'   # testssl's severities, lowest first
rank() { jq -nr --argjson order "$order" --arg s "$1" '$order | index($s) // -1'; }
[ "$(rank "$max")" -ge 0 ] || die "TESTSSL_MAX must be one of OK INFO LOW MEDIUM HIGH CRITICAL"

# The address, without asking any DNS server: getent goes through nsswitch (/etc/hosts first).
ip=${TESTSSL_IP:-}
if [ -z "$ip" ]; then
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
    ip=$host
  else
    ip=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 { print $1 }')
    [ -n "$ip" ] || ip=$(getent ahosts "$host" 2>/dev/null | awk 'NR == 1 { print $1 }')
  fi
  [ -n "$ip" ] || die "cannot resolve $host locally; set TESTSSL_IP"
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
json="$out/${host}_p${port}-$stamp.json"
log="$out/${host}_p${port}-$stamp.log"

args=(--quiet --color 0 --warnings batch --nodns none --ip "$ip"
      --connect-timeout 10 --openssl-timeout 10
      --jsonfile "$json" --logfile "$log")
if [ "$ca" != none ]; then
  IFS=, read -ra cas <<< "$ca"
  abs=()
  for f in "${cas[@]}"; do
    [ -r "$f" ] || die "CA file $f not readable (set TESTSSL_CA, or TESTSSL_CA=none)"
    abs+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
  done
  args+=(--add-ca "$(IFS=,; echo "${abs[*]}")")
fi
[[ $ip == *:* ]] && args+=(-6)
# A plain scan is testssl's default: everything except per-cipher (-E) and GREASE (-g) checks.
args+=("$@")

version=$("$testssl" --version 2>/dev/null | sed -n 's/^ *testssl\(\.sh\)\? *\([0-9][^ ]*\).*/\2/p' | head -1)
echo "testssl ${version:-?} against $host:$port ($ip), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "command: $testssl ${args[*]} $host:$port"
rc=0
# GIT_DIR: testssl puts `git log` of its working directory in its banner and JSON; this repository's
# commit is not testssl's version.
(cd "$out" && GIT_DIR=/dev/null "$testssl" "${args[@]}" "$host:$port") >/dev/null 2>"$out/stderr-$stamp.txt" || rc=$?
if [ ! -s "$json" ]; then
  cat "$out/stderr-$stamp.txt" >&2
  die "testssl exited with $rc and wrote no findings"
fi

# WARN (a check that could not run) and FATAL are listed apart from the severities.
echo
echo "findings by severity:"
jq -r --argjson order "$order" '
  . as $all
  | ($order | reverse)[] as $s
  | "  \($s)\t\([$all[] | select(.severity == $s)] | length)"' "$json"
jq -r '[.[] | select(.severity == "WARN" or .severity == "FATAL")] | length as $n
       | if $n > 0 then "  WARN/FATAL\t\($n) (checks that could not run)" else empty end' "$json"
echo
echo "above INFO:"
jq -r --argjson order "$order" '
  [.[] | select((.severity as $s | $order | index($s) // -1) >= 2)]
  | sort_by(-(.severity as $s | $order | index($s)))
  | if length == 0 then "  (none)" else .[] | "  \(.severity)\t\(.id)\t\(.finding)" end' "$json"
jq -r '.[] | select(.severity == "WARN" or .severity == "FATAL") | "  \(.severity)\t\(.id)\t\(.finding)"' "$json"
highest=$(jq -r --argjson order "$order" '
  [.[] | .severity as $s | $order | index($s) // empty] | max // 0 | $order[.]' "$json")
echo
echo "highest severity: $highest"
echo "full results: $log, $json"

if jq -e 'any(.[]; .severity == "FATAL")' "$json" >/dev/null; then
  die "the scan did not complete (FATAL above): nothing was measured"
fi

[ "$(rank "$highest")" -le "$(rank "$max")" ]

#!/usr/bin/env bash
# The README's curl walk-through, against a running server: fails on the first unexpected status.
#
#   cargo run --release -- serve &        # the example deployment
#   tests/smoke.sh                        # or: SIPCFG_URL=https://localhost:16971 tests/smoke.sh
#                                         # (SIPCFG_ADMIN_URL: the admin listener, default http://127.0.0.1:9971)
#
# Tokens are minted with the example deployment's signing key, with the README's own `cargo run -q --release --`
# (SIPCFG_BIN=path/to/sipcfg to use a built binary instead). Run from the repository root or anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

url=${SIPCFG_URL:-https://localhost:6971}
ca=certs-example/ca.pem
if [ -n "${SIPCFG_BIN:-}" ]; then
  sipcfg=("$SIPCFG_BIN")
else
  sipcfg=(cargo run -q --release --)
fi

failures=0
passes=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect STATUS DESCRIPTION CURL-ARGS...
expect() {
  local want=$1 what=$2
  shift 2
  local got
  got=$(curl -sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --cacert "$ca" "$@") || got="curl-failed($?)"
  if [ "$got" = "$want" ]; then
    passes=$((passes + 1))
    printf 'ok    %s  %s\n' "$got" "$what"
  else
    failures=$((failures + 1))
    printf 'FAIL  %s (expected %s)  %s\n' "$got" "$want" "$what"
    sed 's/^/      /' "$tmp/headers" || true
  fi
}

header() { { grep -i "^$1:" "$tmp/headers" 2>/dev/null || true; } | head -n1 | cut -d' ' -f2- | tr -d '\r'; }

for _ in $(seq 1 50); do
  curl -s -o /dev/null --cacert "$ca" "$url/" && break
  sleep 0.2
done

# The walk-through ends by revoking this device's tokens, which refuses every token issued up to that second
# (token times are whole seconds): mint in a later second, as an administrator reissuing would.
sleep 1.1
token=$("${sipcfg[@]}" token --device SEP001122334455)
other=$("${sipcfg[@]}" token --device SEP001122334466)
user=$("${sipcfg[@]}" token --user jsmith)

expect 200 "the phone downloads its own config" -H "Authorization: Bearer $token" "$url/SEP001122334455.cnf.xml"
grep -qs '<sipOAuthMode>1</sipOAuthMode>' "$tmp/body" || { echo "FAIL  body lacks sipOAuthMode 1"; failures=$((failures + 1)); }
etag=$(header etag)
expect 304 "revalidation with If-None-Match" -H "Authorization: Bearer $token" -H "If-None-Match: $etag" "$url/SEP001122334455.cnf.xml"
expect 200 "HEAD" -I -H "Authorization: Bearer $token" "$url/SEP001122334455.cnf.xml"
expect 200 "over HTTP/1.1 too" --http1.1 -H "Authorization: Bearer $token" "$url/SEP001122334455.cnf.xml"
expect 401 "no token" "$url/SEP001122334455.cnf.xml"
[ "$(header www-authenticate)" = 'Bearer realm="sipcfg"' ] || { echo "FAIL  401 without the Bearer challenge"; failures=$((failures + 1)); }
expect 401 "a token in the URL is never read" "$url/SEP001122334455.cnf.xml?access_token=$token"
expect 401 "a bad token" -H "Authorization: Bearer x.y.z" "$url/SEP001122334455.cnf.xml"
expect 403 "another device's token" -H "Authorization: Bearer $other" "$url/SEP001122334455.cnf.xml"
expect 403 "a device that does not exist" -H "Authorization: Bearer $token" "$url/SEP00112233AAAA.cnf.xml"
expect 403 "a disabled device" -H "Authorization: Bearer $user" "$url/SEP0011223344FF.cnf.xml"
expect 200 "a user token opens the user's Jabber config" -H "Authorization: Bearer $user" "$url/CSFJSMITH.cnf.xml"
expect 404 "a name outside the grammar" -H "Authorization: Bearer $token" "$url/ITLFile.tlv"
expect 405 "POST" -X POST -H "Authorization: Bearer $token" "$url/SEP001122334455.cnf.xml"
# The refresh login flow, as the README shows it.
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$tmp/body"; }
code=$("${sipcfg[@]}" activation-code create --device SEP001122334466 2>/dev/null)
expect 200 "an activation code is redeemed" "$url/oauth/token" -d grant_type=urn:sipcfg:grant-type:activation-code -d "code=$code"
access=$(json_field access_token)
refresh=$(json_field refresh_token)
[ "$(header cache-control)" = "no-store" ] || { echo "FAIL  token answer without Cache-Control: no-store"; failures=$((failures + 1)); }
expect 200 "download with the issued access token" -H "Authorization: Bearer $access" "$url/SEP001122334466.cnf.xml"
expect 400 "the code is single use" "$url/oauth/token" -d grant_type=urn:sipcfg:grant-type:activation-code -d "code=$code"
expect 200 "refresh (rotation)" "$url/oauth/token" -d grant_type=refresh_token -d "refresh_token=$refresh"
access2=$(json_field access_token)
expect 200 "download with the refreshed access token" -H "Authorization: Bearer $access2" "$url/SEP001122334466.cnf.xml"
"${sipcfg[@]}" token revoke --device SEP001122334466 >/dev/null
expect 401 "download after revocation" -H "Authorization: Bearer $access2" "$url/SEP001122334466.cnf.xml"
expect 200 "JWKS" "$url/.well-known/jwks.json"

if curl -sS -o /dev/null --cacert "$ca" --tls-max 1.1 "$url/" 2>/dev/null; then
  echo "FAIL  TLS 1.1 was accepted"; failures=$((failures + 1))
else
  passes=$((passes + 1)); echo "ok    ---  TLS 1.1 refused"
fi

# The admin listener (loopback, plain HTTP): readiness and the metrics of the requests above.
admin=${SIPCFG_ADMIN_URL:-http://127.0.0.1:9971}
expect 200 "admin: /healthz" "$admin/healthz"
expect 200 "admin: /readyz" "$admin/readyz"
expect 200 "admin: /metrics" "$admin/metrics"
if grep -q '^sipcfg_http_requests_total{listener="https",kind="device-config",code="200"} [1-9]' "$tmp/body"; then
  passes=$((passes + 1)); echo "ok    ---  /metrics counted the downloads"
else
  echo "FAIL  /metrics did not count the downloads"; failures=$((failures + 1))
fi

echo "smoke: $passes passed, $failures failed"
[ "$failures" = 0 ]

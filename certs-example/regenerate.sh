#!/usr/bin/env bash
# Regenerates every file in certs-example/: the example CA (standing for the Phone-Edge-Trust root), the
# server certificate it issues for localhost / 127.0.0.1 / ::1, and the ES256 key pair that signs and verifies
# the example deployment's access tokens. It also regenerates the test-only keys in tests/fixtures/keys/.
#
# Usage (from anywhere):  certs-example/regenerate.sh
# Needs: openssl 3.
#
# These keys are public (they are in the repository): never use them in a real deployment. sipcfg warns on
# startup when it finds the EXAMPLE-KEYS marker file next to a key it loads.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../tests/fixtures/keys"
mkdir -p "$fixtures"
cd "$here"
days=7300 # 20 years

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Example CA: ECDSA P-256, self-signed, CA:TRUE.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -out ca.pem \
  -subj "/O=sipcfg example/CN=sipcfg Example Phone-Edge-Trust Root CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash"

# Server certificate: ECDSA P-256, for the names a phone or curl uses on this machine.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server-key.pem
openssl req -new -key server-key.pem -out "$tmp/server.csr" -subj "/O=sipcfg example/CN=localhost"
cat > "$tmp/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
crlDistributionPoints=URI:http://localhost:6970/sipcfg-example-ca.crl
EXT
openssl x509 -req -in "$tmp/server.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 \
  -days "$days" -extfile "$tmp/server.ext" -out server.pem
rm -f ca.srl

# The CA's (empty) certificate revocation list, named in the server certificate and served by the example
# deployment's plain-HTTP port from its file root, so revocation can be checked as for a real CA.
touch "$tmp/index.txt"
cat > "$tmp/ca.cnf" <<CNF
[ca]
default_ca = example
[example]
database = $tmp/index.txt
default_md = sha256
default_crl_days = $days
crlnumber = $tmp/crlnumber
CNF
echo 01 > "$tmp/crlnumber"
openssl ca -gencrl -config "$tmp/ca.cnf" -keyfile ca-key.pem -cert ca.pem -out "$here/../example/files/sipcfg-example-ca.crl"

# The CA is also the example deployment's Phone-Edge-Trust certificate.
rm -f "$here"/../example/phone-edge-trust/*.pem
cp ca.pem "$here/../example/phone-edge-trust/$(openssl x509 -in ca.pem -outform DER | sha256sum | cut -c1-16).pem"

# Token signing key (ES256): the private key signs (sipcfg token, the token endpoint), the public key verifies.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out token-signing-key.pem
openssl pkey -in token-signing-key.pem -pubout -out token-signing-pub.pem

chmod 600 ./*-key.pem
touch EXAMPLE-KEYS

# Test-only keys, one per supported algorithm family, plus a second ES256 key that the server does not trust.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$fixtures/rsa-key.pem"
openssl pkey -in "$fixtures/rsa-key.pem" -pubout -out "$fixtures/rsa-pub.pem"
openssl genpkey -algorithm ED25519 -out "$fixtures/ed25519-key.pem"
openssl pkey -in "$fixtures/ed25519-key.pem" -pubout -out "$fixtures/ed25519-pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$fixtures/other-es256-key.pem"
openssl pkey -in "$fixtures/other-es256-key.pem" -pubout -out "$fixtures/other-es256-pub.pem"

openssl verify -CAfile ca.pem server.pem
echo "certs-example/ regenerated; valid until $(openssl x509 -in server.pem -noout -enddate | cut -d= -f2)"

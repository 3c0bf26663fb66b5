# Shared by bootstorm.sh and instructions.sh (sourced, not run): the phones' token keys and the [auth],
# [inventory], [files] and [trust] sections of a benchmark configuration. Needs ROOT (the checkout) and WORK (the run's folder).

# install_debian PKG...: installs the Debian packages named, if any (apt-get update first; sudo when not root).
install_debian() {
    [ $# -gt 0 ] || return 0
    printf '== installing %s from Debian\n' "$*" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@"
}

# token_keys ALG: RS256 (a fresh RSA-2048 key, as CUCM signs its access tokens) or ES256 (the example's P-256
# key; its verification costs about 2.5x RS256's). Sets TOKEN_KEY and TOKEN_PUB.
token_keys() {
    case "$1" in
        RS256)
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/token-key.pem" 2>/dev/null
            openssl pkey -in "$WORK/token-key.pem" -pubout -out "$WORK/token-pub.pem"
            TOKEN_KEY=$WORK/token-key.pem; TOKEN_PUB=$WORK/token-pub.pem ;;
        ES256) TOKEN_KEY=$ROOT/certs-example/token-signing-key.pem; TOKEN_PUB=$ROOT/certs-example/token-signing-pub.pem ;;
        *) echo "TOKEN_ALG must be RS256 or ES256" >&2; exit 2 ;;
    esac
}

# auth_sections ALG: [auth], its one key and the signing key sipcfg-load --mint uses, after token_keys.
auth_sections() {
    cat <<EOT
[auth]
issuer = "https://sipcfg.example.test"
audience = "sipcfg"
algorithms = ["$1"]
leeway_secs = 30
max_token_bytes = 8192

[[auth.keys]]
kid = "bench-$1"
algorithm = "$1"
public_key = "$TOKEN_PUB"

[auth.signing]
kid = "bench-$1"
algorithm = "$1"
private_key = "$TOKEN_KEY"
default_ttl_secs = 86400

EOT
}

# deployment_sections: the generated inventory in $WORK, the repository's templates, files and trust.
deployment_sections() {
    cat <<EOT
[inventory]
file = "$WORK/inventory.toml"
templates = "$ROOT/templates"

[files]
root = "$ROOT/example/files"

[trust]
phone_edge_trust = "$ROOT/example/phone-edge-trust"

EOT
}

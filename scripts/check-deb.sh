#!/usr/bin/env bash
# Checks a sipcfg Debian package; exits non-zero, naming the failed check, on the first failure.
#
#   scripts/check-deb.sh [--static-only] DEB
#
# 1. Contents and metadata (dpkg-deb -I/-f/-c): the binary at /usr/bin/sipcfg, executable; the systemd unit;
#    /etc/sipcfg/sipcfg.toml and inventory.toml marked as conffiles; the templates, man pages and shell
#    completions; sane Depends; maintainer scripts that never enable or start the service on install.
# 2. Only as root with dpkg, and unless --static-only: installs the package on this machine and checks the
#    system user, the ownership of /var/lib/sipcfg and /var/log/sipcfg, `sipcfg --version`, that `sipcfg
#    check` names the missing certificate, that the service user can serve the packaged configuration once
#    a (throwaway) certificate is in place, `systemd-analyze verify` of the unit, that a reinstall keeps an
#    edited conffile and the generated keys, that `dpkg -r` keeps the data and `dpkg -P` removes it. The
#    package is purged again at the end, also after a failure (SIPCFG_CHECK_KEEP=1 keeps it installed);
#    the system user `sipcfg` stays, as the package intends. Refuses to run if sipcfg is already installed.
set -euo pipefail

static_only=0
if [ "${1:-}" = "--static-only" ]; then
  static_only=1
  shift
fi
[ $# -eq 1 ] || { echo "usage: $0 [--static-only] DEB" >&2; exit 2; }
deb=$1

checks=0
ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
note() { printf '     %s\n' "$*"; }

[ -f "$deb" ] || fail "$deb: no such file"
command -v dpkg-deb >/dev/null || fail "dpkg-deb is not installed"

# --- 1. contents and metadata ------------------------------------------------------------------------
contents=$(dpkg-deb -c "$deb") || fail "dpkg-deb -c $deb: not a readable Debian package"
info=$(dpkg-deb -I "$deb") || fail "dpkg-deb -I $deb failed"
field() { dpkg-deb -f "$deb" "$1"; }
entry() { printf '%s\n' "$contents" | awk -v p="./${1#/}" '$NF == p'; }
has() { [ -n "$(entry "$1")" ] || fail "$2: $1 is not in the package"; }

[ "$(field Package)" = sipcfg ] || fail "Package is '$(field Package)', not sipcfg"
ok "Package: sipcfg $(field Version) ($(field Architecture))"
if command -v dpkg >/dev/null; then
  [ "$(field Architecture)" = "$(dpkg --print-architecture)" ] \
    || fail "Architecture $(field Architecture) is not this machine's ($(dpkg --print-architecture))"
fi

bin=$(entry /usr/bin/sipcfg)
[ -n "$bin" ] || fail "binary: /usr/bin/sipcfg is not in the package"
case "$bin" in
  -rwxr-xr-x*) ok "/usr/bin/sipcfg, mode 755" ;;
  *) fail "binary: /usr/bin/sipcfg is not an executable regular file of mode 755: $bin" ;;
esac

unit=""
for u in /usr/lib/systemd/system/sipcfg.service /lib/systemd/system/sipcfg.service; do
  if [ -n "$(entry "$u")" ]; then unit=$u; fi
done
[ -n "$unit" ] || fail "unit: sipcfg.service is in neither /usr/lib/systemd/system nor /lib/systemd/system"
ok "systemd unit $unit"
unit_text=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ".$unit")
for line in Type=notify User=sipcfg "ExecStart=/usr/bin/sipcfg serve --config /etc/sipcfg/sipcfg.toml" \
  "ExecReload=/bin/kill -HUP \$MAINPID" StateDirectory=sipcfg ProtectSystem=strict NoNewPrivileges=yes; do
  grep -qxF "$line" <<<"$unit_text" || fail "unit: $unit lacks the line '$line'"
done
ok "unit: Type=notify, User=sipcfg, ExecStart, ExecReload, StateDirectory, hardening"

conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null || true)
for c in /etc/sipcfg/sipcfg.toml /etc/sipcfg/inventory.toml; do
  has "$c" "configuration"
  grep -qxF "$c" <<<"$conffiles" || fail "conffiles: $c is in the package but not marked as a conffile"
done
ok "conffiles: $(tr '\n' ' ' <<<"$conffiles")"

has /usr/share/sipcfg/templates/base.xml.j2 "templates"
models=$(grep -c '\./usr/share/sipcfg/templates/models/.*\.xml\.j2$' <<<"$contents" || true)
[ "$models" -gt 0 ] || fail "templates: no model template under /usr/share/sipcfg/templates/models"
ok "templates: base.xml.j2 and $models model templates"

has /usr/share/man/man1/sipcfg.1.gz "man page"
has /usr/share/man/man1/sipcfg-serve.1.gz "man page"
pages=$(grep -c '\./usr/share/man/man1/sipcfg.*\.1\.gz$' <<<"$contents" || true)
ok "man pages: $pages, sipcfg(1) and sipcfg-serve(1) among them"

has /usr/share/bash-completion/completions/sipcfg "bash completion"
has /usr/share/zsh/vendor-completions/_sipcfg "zsh completion"
has /usr/share/fish/vendor_completions.d/sipcfg.fish "fish completion"
ok "completions: bash, zsh, fish"

depends=$(field Depends)
# shellcheck disable=SC2016 # literal: cargo-deb's variables must not survive into the package
case "$depends" in
  *'$auto'* | *'${'*) fail "Depends has an unexpanded variable: $depends" ;;
esac
grep -q 'libc6' <<<"$depends" || fail "Depends does not name libc6 (shared library dependencies missing): $depends"
grep -Eq '(^|[ ,|])(adduser|passwd)( |,|$)' <<<"$depends" || fail "Depends names neither adduser nor passwd: $depends"
ok "Depends: $depends"

postinst=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst 2>/dev/null) || fail "no postinst in the package"
grep -q '#DEBHELPER#' <<<"$postinst" && fail "postinst: #DEBHELPER# was not replaced"
grep -q 'deb-systemd-helper update-state sipcfg.service' <<<"$postinst" \
  || fail "postinst: the systemd unit handling (deb-systemd-helper) is missing"
# shellcheck disable=SC2016 # literal: the shell variable of cargo-deb's start snippet
grep -Eq 'deb-systemd-invoke (start|\$_dh_action)|_dh_action=start' <<<"$postinst" \
  && fail "postinst: starts the service on install (it must wait for the administrator's certificate)"
grep -q 'deb-systemd-helper enable' <<<"$postinst" && ! grep -q 'deb-systemd-helper debian-installed' <<<"$postinst" \
  && fail "postinst: enables the service on install"
ok "maintainer scripts: the service is neither enabled nor started on install (try-restart on upgrade)"
grep -q ' postrm ' <<<"$info" || fail "no postrm in the package"

if [ "$static_only" = 1 ]; then
  echo "static checks passed ($checks); install checks skipped (--static-only)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "static checks passed ($checks); install checks skipped (they need root and dpkg)"
  exit 0
fi

# --- 2. install, use, remove, purge ------------------------------------------------------------------
if dpkg-query -W -f '${Status}' sipcfg 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "sipcfg is already installed (or its configuration remains) on this machine: the install checks would replace and purge it; purge it first, or run with --static-only"
fi

installed=0
cert_made=0
cleanup() {
  status=$?
  if [ "$cert_made" = 1 ]; then rm -f /etc/sipcfg/tls/server.pem /etc/sipcfg/tls/server-key.pem; fi
  if [ "$installed" = 1 ] && [ "${SIPCFG_CHECK_KEEP:-0}" != 1 ]; then
    dpkg -P sipcfg >/dev/null 2>&1 || true
    [ "$status" = 0 ] || echo "     (the package was purged again after the failure; SIPCFG_CHECK_KEEP=1 keeps it)" >&2
  fi
}
trap cleanup EXIT

dpkg_quiet() { DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold "$@" 2>&1; }

log=$(dpkg_quiet -i "$deb") || { printf '%s\n' "$log" >&2; fail "dpkg -i $deb failed"; }
installed=1
ok "dpkg -i"
grep -q 'installed but not started' <<<"$log" || fail "postinst did not tell how to start (missing certificate message)"
ok "postinst explains the first start (certificate missing)"

pw=$(getent passwd sipcfg) || fail "user sipcfg does not exist after install"
uid=$(printf '%s' "$pw" | cut -d: -f3)
home=$(printf '%s' "$pw" | cut -d: -f6)
shell=$(printf '%s' "$pw" | cut -d: -f7)
[ "$uid" -lt 1000 ] || fail "user sipcfg is not a system user (uid $uid)"
[ "$home" = /var/lib/sipcfg ] || fail "user sipcfg's home is $home, not /var/lib/sipcfg"
case "$shell" in */nologin | /bin/false) ;; *) fail "user sipcfg has a login shell: $shell" ;; esac
getent group sipcfg >/dev/null || fail "group sipcfg does not exist"
ok "system user sipcfg (uid $uid, home $home, shell $shell)"

owner() { stat -c '%U:%G %a' "$1" 2>/dev/null || echo "missing"; }
expect_owner() { [ "$(owner "$1")" = "$2" ] || fail "$1 is '$(owner "$1")', expected '$2'"; }
expect_owner /var/lib/sipcfg "sipcfg:sipcfg 750"
expect_owner /var/lib/sipcfg/sipcfg.db "sipcfg:sipcfg 600"
expect_owner /var/lib/sipcfg/files "root:root 755"
expect_owner /var/log/sipcfg "sipcfg:sipcfg 750"
expect_owner /etc/sipcfg/tls "root:sipcfg 750"
ok "/var/lib/sipcfg, its database and /var/log/sipcfg are the service's; files/ and /etc/sipcfg/tls are root's"
if command -v openssl >/dev/null; then
  expect_owner /etc/sipcfg/keys/token-signing-key.pem "root:sipcfg 640"
  expect_owner /etc/sipcfg/keys/token-signing-pub.pem "root:root 644"
  ok "local token signing key generated, readable by root and the service only"
else
  note "openssl is not installed: no token signing key was generated (as the postinst says)"
fi

version=$(/usr/bin/sipcfg --version) || fail "sipcfg --version failed"
ok "sipcfg --version: $version"

set +e
check_out=$(/usr/bin/sipcfg check --config /etc/sipcfg/sipcfg.toml 2>&1)
check_rc=$?
set -e
[ "$check_rc" = 1 ] || fail "sipcfg check without a certificate exited $check_rc, not 1: $check_out"
grep -q '/etc/sipcfg/tls/server.pem' <<<"$check_out" \
  || fail "sipcfg check does not name the missing certificate: $check_out"
if command -v openssl >/dev/null; then
  grep -qF '1 error(s)' <<<"$check_out" || fail "sipcfg check reports more than the certificate: $check_out"
fi
ok "sipcfg check names the missing certificate: $(printf '%s\n' "$check_out" | head -n 1)"

if command -v openssl >/dev/null && command -v runuser >/dev/null && command -v setpriv >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=sipcfg-check \
    -keyout /etc/sipcfg/tls/server-key.pem -out /etc/sipcfg/tls/server.pem 2>/dev/null \
    || fail "openssl could not make a throwaway certificate"
  cert_made=1
  chown root:sipcfg /etc/sipcfg/tls/server-key.pem
  chmod 640 /etc/sipcfg/tls/server-key.pem
  out=$(runuser -u sipcfg -- /usr/bin/sipcfg check --config /etc/sipcfg/sipcfg.toml 2>&1) \
    || fail "sipcfg check as user sipcfg, with a certificate in place, failed: $out"
  ok "as user sipcfg, with a certificate: $out"
  serve_log=$(mktemp)
  # setpriv execs the server itself (runuser would stay in between and turn SIGTERM into its own failure).
  setpriv --reuid=sipcfg --regid=sipcfg --init-groups -- /usr/bin/sipcfg serve --config /etc/sipcfg/sipcfg.toml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$serve_log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    grep -q 'serving configuration files' "$serve_log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  grep -q 'serving configuration files' "$serve_log" || { cat "$serve_log" >&2; kill "$pid" 2>/dev/null || true; fail "sipcfg serve as user sipcfg did not start"; }
  kill -TERM "$pid"
  wait "$pid" || { cat "$serve_log" >&2; fail "sipcfg serve as user sipcfg did not exit cleanly on SIGTERM"; }
  rm -f "$serve_log"
  [ -s /var/lib/sipcfg/sipcfg.db ] || fail "the server did not initialise /var/lib/sipcfg/sipcfg.db"
  expect_owner /var/lib/sipcfg/sipcfg.db "sipcfg:sipcfg 600"
  [ -e /var/log/sipcfg/audit.log ] || fail "the server did not open /var/log/sipcfg/audit.log"
  [ "$(stat -c %U /var/log/sipcfg/audit.log)" = sipcfg ] || fail "/var/log/sipcfg/audit.log is not the service's"
  ok "as user sipcfg: sipcfg serve starts on the packaged configuration, writes its database and audit log, exits 0 on SIGTERM"
  rm -f /etc/sipcfg/tls/server.pem /etc/sipcfg/tls/server-key.pem
  cert_made=0
else
  note "openssl, runuser or setpriv missing: serving as user sipcfg not tried"
fi

if command -v systemd-analyze >/dev/null; then
  # Only this unit's own problems count: a machine without a running systemd may warn about others.
  verify=$(systemd-analyze verify "$unit" 2>&1 || true)
  problems=$(grep -i 'sipcfg' <<<"$verify" || true)
  [ -z "$problems" ] || fail "systemd-analyze verify $unit: $problems"
  ok "systemd-analyze verify $unit"
else
  note "systemd-analyze not installed: unit not verified"
fi

printf '\n# edited by check-deb.sh\n' >>/etc/sipcfg/sipcfg.toml
key_sum=$(sha256sum /etc/sipcfg/keys/token-signing-key.pem 2>/dev/null || true)
log=$(dpkg_quiet -i "$deb") || { printf '%s\n' "$log" >&2; fail "reinstalling (upgrade path) failed"; }
grep -q '^# edited by check-deb.sh$' /etc/sipcfg/sipcfg.toml || fail "reinstalling replaced the edited conffile /etc/sipcfg/sipcfg.toml"
[ "$(sha256sum /etc/sipcfg/keys/token-signing-key.pem 2>/dev/null || true)" = "$key_sum" ] \
  || fail "reinstalling replaced the token signing key"
ok "reinstall (upgrade path): the edited conffile and the signing key are kept"

log=$(dpkg_quiet -r sipcfg) || { printf '%s\n' "$log" >&2; fail "dpkg -r sipcfg failed"; }
[ ! -e /usr/bin/sipcfg ] || fail "dpkg -r left /usr/bin/sipcfg"
[ -e /var/lib/sipcfg/sipcfg.db ] || fail "dpkg -r removed the state database (only a purge may)"
[ -e /etc/sipcfg/sipcfg.toml ] || fail "dpkg -r removed the conffile /etc/sipcfg/sipcfg.toml (only a purge may)"
ok "dpkg -r: the binary is gone; configuration, state database and audit log stay"

log=$(dpkg_quiet -P sipcfg) || { printf '%s\n' "$log" >&2; fail "dpkg -P sipcfg failed"; }
installed=0
for gone in /var/lib/sipcfg /var/log/sipcfg /etc/sipcfg/sipcfg.toml /etc/sipcfg/inventory.toml /etc/sipcfg/keys /etc/sipcfg; do
  [ ! -e "$gone" ] || fail "dpkg -P left $gone"
done
getent passwd sipcfg >/dev/null || fail "dpkg -P removed the system user sipcfg (it is meant to stay)"
ok "dpkg -P: state, logs, configuration and generated keys removed; the system user sipcfg stays"

echo "all $checks checks passed"

#!/usr/bin/env bash
# Builds the Debian package of sipcfg and prints its path on the last line of standard output. The
# binary's line tables (backtraces) go to sipcfg-dbgsym_*.ddeb beside it, installed only for debugging.
#
#   scripts/build-deb.sh            then: scripts/check-deb.sh target/debian/sipcfg_*.deb
#
# Steps: `cargo build --release --bin sipcfg`; the man pages (`sipcfg manpage`, gzipped) and the bash, zsh
# and fish completions (`sipcfg completions SHELL`) into target/assets/; then `cargo deb --no-build`, which
# packages what [package.metadata.deb] in Cargo.toml lists (installing cargo-deb first if it is missing:
# `cargo install --locked cargo-deb`, a few minutes). Installed files, maintainer scripts and first start:
# docs/operations.md, "Packaging and installing".
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '=== %s\n' "$*" >&2; }
fail() { printf 'build-deb: %s\n' "$*" >&2; exit 1; }

step "cargo build --release --bin sipcfg"
cargo build --release --bin sipcfg >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || fail "cannot find cargo's target directory"
bin="$target_dir/release/sipcfg"
[ -x "$bin" ] || fail "$bin was not built"

# cargo-deb reads the generated assets from target/assets/ in the crate (Cargo.toml names them so).
assets=target/assets
step "man pages and completions into $assets/"
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" manpage --out "$assets/man" >&2 || fail "sipcfg manpage --out $assets/man failed"
compgen -G "$assets/man/*.1" >/dev/null || fail "sipcfg manpage wrote no *.1 page into $assets/man"
[ -f "$assets/man/sipcfg.1" ] || fail "sipcfg manpage did not write sipcfg.1"
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/sipcfg.bash" || fail "sipcfg completions bash failed"
"$bin" completions zsh >"$assets/completions/_sipcfg" || fail "sipcfg completions zsh failed"
"$bin" completions fish >"$assets/completions/sipcfg.fish" || fail "sipcfg completions fish failed"
for f in "$assets"/completions/*; do
  [ -s "$f" ] || fail "$f is empty"
done

if ! cargo deb --version >/dev/null 2>&1; then
  step "cargo install --locked cargo-deb"
  cargo install --locked cargo-deb >&2
fi

step "cargo deb --no-build ($(cargo deb --version 2>/dev/null))"
out=$(cargo deb --no-build) || fail "cargo deb failed"
# cargo-deb prints the path of each file it wrote: the .deb, and the -dbgsym .ddeb (Cargo.toml: dbgsym).
deb=$(printf '%s\n' "$out" | grep '\.deb$' | tail -n 1 || true)
[ -f "$deb" ] || fail "cargo deb did not report a package file (output: $out)"
echo "$deb"

#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ in turn, each for a fixed time, and fails if any finds a crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 60); TARGETs default to all
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, sanitizer-coverage passes). Only the
# stable toolchain is installed, so the nightly features are unlocked on stable with RUSTC_BOOTSTRAP=1. The
# exact command this script runs for each target, from fuzz/, is:
#
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer address TARGET corpus/TARGET -- -max_total_time=SECONDS -print_final_stats=1
#
# AddressSanitizer links on stable (its runtime ships with the toolchain); FUZZ_SANITIZER=none switches it
# off if it ever does not. Each run is one libFuzzer process on one core (what -jobs=1 -workers=1 amounts
# to). The seeds in fuzz/seeds/TARGET are copied into fuzz/corpus/TARGET first; the corpus grows across runs
# (fuzz/corpus and fuzz/artifacts are ignored by git). A crash leaves its reproducer in
# fuzz/artifacts/TARGET/; replay it with
#
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-…)
#
# Extra libFuzzer flags can be given in FUZZ_ARGS (e.g. FUZZ_ARGS="-max_len=512").
set -euo pipefail

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]   (SECONDS per target, default 60)" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-address}"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== building ${targets[*]} (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" "$t"
done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    if [ -d "seeds/$t" ]; then
        cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
    fi
    echo "== fuzzing $t for ${seconds}s"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_ARGS:-} >"$logs/$t.log" 2>&1 || status=$?
    stats="$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -n 1 || true)"
    done_line="$(grep -E '^Done [0-9]+ runs' "$logs/$t.log" | tail -n 1 || true)"
    corpus="$(find "corpus/$t" -type f | wc -l)"
    echo "$t: ${stats:-no stats line} | ${done_line:-not done} | corpus files: $corpus"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $status): last lines of its log:" >&2
        grep -E "panicked|SUMMARY|ERROR|Test unit written|deadly signal|timeout|out-of-memory" "$logs/$t.log" | head -n 20 >&2 || true
        tail -n 40 "$logs/$t.log" >&2
    fi
    summary+=("$t: exit $status; ${stats:-no stats line}")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes or errors in: ${failed[*]} (reproducers under fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash in ${#targets[@]} targets"

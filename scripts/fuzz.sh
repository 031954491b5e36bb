#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails if any finds a crash.
#
#   ./scripts/fuzz.sh                      # every target, 60 s each
#   FUZZ_SECS=300 ./scripts/fuzz.sh codec  # one target, 5 minutes
#
# The toolchain here is stable only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags
# (-Z sanitizer coverage options) to stable rustc, and --sanitizer none skips ASan, which stable
# cannot build (the library has no unsafe code; libFuzzer's coverage guidance still works).
# Corpora grow in fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target>;
# a crashing input is saved in fuzz/artifacts/<target>/ and printed. Not part of CI (budget).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cd fuzz
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  log="$(mktemp "${TMPDIR:-/tmp}/daramjwee-fuzz-$t.XXXXXX")"
  echo "== fuzz $t for ${secs}s (log: $log)"
  set +e
  cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  cov="$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -o 'cov: [0-9]*' || true)"
  if [ "$rc" -eq 0 ]; then
    echo "$t: ${runs:-?} executions, ${cov:-cov: ?}, 0 crashes"
  else
    echo "$t: CRASH (exit $rc) after ${runs:-?} executions; last lines:"
    tail -40 "$log"
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, 0 crashes"

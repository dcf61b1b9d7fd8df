#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for MINUTES (default 10), one job each.
#   fuzz/run.sh [MINUTES] [TARGET...]        (default: every target)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer needs nightly flags;
# on stable Rust they are enabled with RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER=none builds
# without AddressSanitizer (default: address).
# Corpus growth goes to fuzz/corpus/<target>/ (not committed), seeded from the committed
# fuzz/seeds/<target>/; crashes land in fuzz/artifacts/<target>/; libFuzzer's output in
# fuzz/logs/<target>.log. Prints per target the run count and whether it crashed, and
# exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")"

minutes=${1:-10}
shift $(($# > 0 ? 1 : 0))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(http_request json_strict model_name ndjson_sse salvage)
fi
case $minutes in
  '' | 0 | *[!0-9]*) echo "usage: fuzz/run.sh [MINUTES] [TARGET...]  (MINUTES >= 1)" >&2; exit 64 ;;
esac
export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-address}
# FUZZ_SECONDS overrides the duration (a quick check of the script itself).
seconds=${FUZZ_SECONDS:-$((minutes * 60))}

echo "== building fuzz targets (sanitizer: $sanitizer, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
cargo fuzz build --sanitizer "$sanitizer" >/dev/null 2>logs.build || {
  cat logs.build >&2
  exit 2
}
rm -f logs.build
mkdir -p logs

failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  echo "== $t: ${seconds} s ($(date -u +%H:%M:%S) UTC)"
  start=$(date +%s)
  cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=8192 -print_final_stats=1 "${dict[@]}" \
    >"logs/$t.log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  runs=$(grep -Eo '^Done [0-9]+ runs in [0-9]+ second' "logs/$t.log" | tail -1 | awk '{print $2}')
  artifact=$(grep -Eo 'Test unit written to [^ ]+' "logs/$t.log" | tail -1 | awk '{print $5}')
  if [ $rc -eq 0 ] && [ -n "$runs" ]; then
    result="ok, no crash"
  else
    result="CRASHED (exit $rc)${artifact:+, input: $artifact}; see fuzz/logs/$t.log"
    failed=1
  fi
  line="$t: ${runs:-?} runs in ${took}s wall: $result"
  echo "$line"
  grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1
  summary+=("$line")
done

echo "== summary ($(date -u +%H:%M:%S) UTC)"
printf '%s\n' "${summary[@]}"
exit $failed

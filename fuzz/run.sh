#!/usr/bin/env bash
# Bounded fuzzing run: builds every target once, then runs each for SECS seconds (default 60)
# on a throwaway copy of its seed corpus, prints libFuzzer's final stats line per target, and
# exits non-zero if any target crashed (panic, timeout or out-of-memory; the input is left in
# fuzz/artifacts/<target>/).
#
#   bash fuzz/run.sh [seconds-per-target]
#
# Wall time: one build (cached after the first) + targets × SECS + a few seconds per target.
#
# Sanitizer: SANITIZER (default `address`, cargo-fuzz's own default). Measured on the 2-core
# machine: the ASan build, aws-lc-sys included, builds and runs fine; the first build took
# 19 min (while another cargo build shared the cores), a rebuild after a change to the fuzz
# crate 70 s. Most of the code is safe Rust, where a bug is a panic that libFuzzer catches
# without ASan, so SANITIZER=none is the choice when build time matters more (its own first
# build is not shared with the ASan one).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
sanitizer="${SANITIZER:-address}"
targets=(config proxy_header tickets pipeline http_request)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (cargo +nightly); fuzzing skipped"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

build=(--sanitizer "$sanitizer")
started=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz/run.sh: build took $(($(date +%s) - started))s (sanitizer: $sanitizer)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
for target in "${targets[@]}"; do
  # A copy, so the inputs libFuzzer adds stay out of the committed seeds.
  cp -r "fuzz/corpus/$target" "$work/$target"
  log="$work/$target.log"
  rc=0
  cargo +nightly fuzz run "${build[@]}" "$target" "$work/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
  echo "$target: ${last:-no stats line}"
  if [ "$rc" -ne 0 ]; then
    failed+=("$target")
    echo "$target: FAILED (exit $rc); end of its log:"
    tail -n 40 "$log" | sed 's/^/  /'
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz/run.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets, ${secs}s each, no crash"

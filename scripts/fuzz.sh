#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS seconds each (default 60)
# under libFuzzer with AddressSanitizer: the model and weight readers,
# starting from a seed corpus of valid files written by the hasten-onnx
# `fuzz_seeds` example, and `plan` (op constructors and fastconv plans
# against the reference forward), starting from nothing.
# Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz passes
# compiler flags that only nightly accepts; RUSTC_BOOTSTRAP=1 lets the
# project's one (stable) toolchain accept them. Exits non-zero on the first
# crash (an input running over 60 s counts as one).
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
if ! cargo fuzz --help >/dev/null 2>&1; then
    cargo install --quiet --locked cargo-fuzz
fi
(cd "$root" && cargo run --quiet -p hasten-onnx --example fuzz_seeds -- "$fuzz/corpus")
export RUSTC_BOOTSTRAP=1
for target in onnx_import safetensors_read npy_read npz_read plan; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$fuzz/corpus/$target"
    (cd "$fuzz" && cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=1048576)
done
echo "fuzz.sh: every target ran ${seconds}s without a crash"

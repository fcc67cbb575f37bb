#!/usr/bin/env bash
# Runs every fuzz target of crates/onnx/fuzz for SECONDS seconds each
# (default 60), starting from a seed corpus of valid files written by the
# hasten-onnx `fuzz_seeds` example. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); exits non-zero on the first crash.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/crates/onnx/fuzz"
if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 1
fi
(cd "$root" && cargo run --quiet -p hasten-onnx --example fuzz_seeds -- "$fuzz/corpus")
for target in onnx_import safetensors_read npy_read npz_read; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$fuzz/corpus/$target"
    (cd "$fuzz" && cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=1048576)
done
echo "fuzz.sh: every target ran ${seconds}s without a crash"

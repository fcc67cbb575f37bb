#!/usr/bin/env bash
# Regenerates crates/onnx/src/proto/onnx.rs from the onnx.proto shipped in the
# PyPI `onnx` wheel. Needs pip and cargo; no protoc.
#   scripts/gen-onnx-proto.sh [ONNX_VERSION]   (default: the latest release)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
spec="onnx${1:+==$1}"
python3 -m pip download --no-deps --only-binary=:all: -d "$work" "$spec" >/dev/null
wheel="$(ls "$work"/onnx-*.whl | head -n1)"
version="$(basename "$wheel" | cut -d- -f2)"
python3 - "$wheel" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("onnx/onnx.proto", sys.argv[2])
PY
cargo run --quiet --release --manifest-path "$root/scripts/onnx-proto/Cargo.toml" -- \
    "$work/onnx" "$version" "$root/crates/onnx/src/proto/onnx.rs"
echo "generated crates/onnx/src/proto/onnx.rs from onnx $version"

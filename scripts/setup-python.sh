#!/usr/bin/env bash
# Creates .venv/ (git-ignored) with the Python packages the onnxruntime
# comparisons use: onnx (checker, real model topologies) and onnxruntime.
# Tests find it at .venv/bin/python (or wherever HASTEN_PYTHON points); where
# it is missing they print a SKIPPED message.
#   scripts/setup-python.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
if "$venv/bin/python" -c "import onnx, onnxruntime, numpy" >/dev/null 2>&1; then
    echo "python: $venv already has onnx, onnxruntime and numpy"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "onnx==1.23.2" "onnxruntime==1.32.0" "numpy>=2,<3"
"$venv/bin/python" -c "import onnx, onnxruntime; print('python: onnx', onnx.__version__, '/ onnxruntime', onnxruntime.__version__)"

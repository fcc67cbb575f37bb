#!/usr/bin/env bash
# Training throughput, Hasten against PyTorch on the same machine in the
# same run: LeNet-5 and the small ResNet (resnet8), batch 128, 2 threads,
# random 1x28x28 images, alternating rounds (Hasten, PyTorch, Hasten, ...)
# so that both see the same load. Each line gives images/s by the wall
# clock, images per CPU-second times the thread count (the figure to
# compare on a shared machine) and the peak resident memory.
#
#   bash scripts/train_bench.sh [ROUNDS] [LENET_STEPS] [RESNET_STEPS]
#
# Needs the release example (cargo build --release --example
# train_throughput) and PyTorch for /usr/bin/python3 (Debian:
# apt-get install python3-torch).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
target=${CARGO_TARGET_DIR:-target}
hasten="$target/release/examples/train_throughput"
[ -x "$hasten" ] || cargo build --release --example train_throughput
grep -m1 "model name" /proc/cpuinfo || true
for round in $(seq "$rounds"); do
  for model in lenet5 resnet8; do
    steps=${2:-20}
    [ "$model" = resnet8 ] && steps=${3:-10}
    echo "round $round"
    "$hasten" --model "$model" --steps "$steps" --threads 2 2>/dev/null
    /usr/bin/python3 scripts/torch_train_bench.py --model "$model" --steps "$steps" --threads 2
  done
done

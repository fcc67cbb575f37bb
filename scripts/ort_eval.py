#!/usr/bin/env python3
"""Test accuracy and batch-1 latency of ONNX models under onnxruntime (CPU).

    ort_eval.py IMAGES.npy LABELS.npy THREADS RUNS MODEL.onnx [MODEL.onnx ...]

IMAGES.npy is an NCHW float32 batch, LABELS.npy the class of each image
(any numeric dtype). For each model one line is printed:
`model=<path> accuracy=<fraction> median_ms=<m> min_ms=<m> runs=<r>`, the
accuracy of the first output's arg-max over all images (batches of 500) and
the latency of `ort_bench.Bench` at batch 1 with intra_op_num_threads =
THREADS; or `model=<path> error=<message>` when the model fails. Exits with
status 3 when onnxruntime cannot be imported. Used by `examples/results`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_bench  # noqa: E402


def accuracy(np, ort, model, images, labels, threads):
    session = ort_bench.session(ort, model, threads)
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, images.shape[0], 500):
        y = session.run(None, {name: images[start : start + 500]})[0]
        correct += int((y.reshape(y.shape[0], -1).argmax(axis=1) == labels[start : start + 500]).sum())
    return correct / images.shape[0]


def main() -> int:
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    libs = ort_bench.load()
    if libs is None:
        return 3
    np, ort = libs
    images = np.load(sys.argv[1]).astype(np.float32)
    labels = np.load(sys.argv[2]).astype(np.int64).reshape(-1)
    threads, runs = int(sys.argv[3]), int(sys.argv[4])
    _, c, h, w = images.shape

    def report(model):
        acc = accuracy(np, ort, model, images, labels, threads)
        timing = ort_bench.Bench(np, ort, model, 1, c, h, w, threads).time(runs)
        return f"accuracy={acc:.6f} {timing}"

    ort_bench.each_model(sys.argv[5:], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

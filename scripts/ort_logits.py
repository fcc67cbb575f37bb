#!/usr/bin/env python3
"""Outputs and batch-1 latency of ONNX models under onnxruntime (CPU).

    ort_logits.py IMAGES.npy THREADS RUNS MODEL.onnx [MODEL.onnx ...]

IMAGES.npy is an NCHW float32 batch. For each model, its first output on
every image (run one image at a time) is written as float32 to
`<MODEL>.logits.npy`, and one line is printed:
`model=<path> logits=<path> median_ms=<m> min_ms=<m> runs=<r>`, the latency
being that of `ort_bench.Bench` at batch 1 with intra_op_num_threads =
THREADS; or `model=<path> error=<message>` when the model fails. Exits with
status 3 when onnxruntime cannot be imported. Used by the EfficientNet-Lite0
section of `examples/results`, which compares the outputs itself.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ort_bench  # noqa: E402


def outputs(np, ort, model, images, threads):
    session = ort_bench.session(ort, model, threads)
    name = session.get_inputs()[0].name
    rows = [session.run(None, {name: images[i : i + 1]})[0].reshape(1, -1) for i in range(images.shape[0])]
    return np.concatenate(rows).astype(np.float32)


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    libs = ort_bench.load()
    if libs is None:
        return 3
    np, ort = libs
    images = np.load(sys.argv[1]).astype(np.float32)
    threads, runs = int(sys.argv[2]), int(sys.argv[3])
    _, c, h, w = images.shape

    def report(model):
        logits = model + ".logits.npy"
        np.save(logits, outputs(np, ort, model, images, threads))
        timing = ort_bench.Bench(np, ort, model, 1, c, h, w, threads).time(runs)
        return f"logits={logits} {timing}"

    ort_bench.each_model(sys.argv[4:], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Time an ONNX model with onnxruntime (CPU) on a random NCHW float32 batch.

    ort_bench.py MODEL.onnx BATCH C H W THREADS RUNS

Prints one line, `median_ms=<m> min_ms=<m> runs=<r>`: the median and minimum
of RUNS timed runs after three warm-up runs, with intra_op_num_threads =
THREADS. Exits with status 3 when onnxruntime cannot be imported. Used by
`hasten bench --compare-ort`.
"""
import sys
import time


def main() -> int:
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"onnxruntime unavailable: {e}", file=sys.stderr)
        return 3
    model = sys.argv[1]
    batch, c, h, w, threads, runs = (int(a) for a in sys.argv[2:])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
    feeds = {session.get_inputs()[0].name: x}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"median_ms={times[len(times) // 2] * 1e3:.6f} min_ms={times[0] * 1e3:.6f} runs={len(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

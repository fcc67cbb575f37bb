#!/usr/bin/env python3
"""Time an ONNX model with onnxruntime (CPU) on a random NCHW float32 batch.

    ort_bench.py MODEL.onnx BATCH C H W THREADS RUNS
    ort_bench.py --serve

Prints one line, `median_ms=<m> min_ms=<m> runs=<r>`: the median and minimum
of RUNS timed runs after three warm-up runs, with intra_op_num_threads =
THREADS. Exits with status 3 when onnxruntime cannot be imported. Used by
`hasten bench --compare-ort`.

With `--serve` it reads one request per line on standard input, the same
seven arguments separated by spaces, and answers each with that line (the
session of each model is created once and kept; warm-up runs only on the
first request), so a caller can interleave its own runs with onnxruntime's
in one process. Idle intra-op threads sleep instead of spinning, so the
caller can read this process's CPU time as onnxruntime's work, unless the
request ends with an eighth word, `spin` (onnxruntime's default, its lowest
latency). Used by `examples/conv_vs_ort.rs`.
"""
import sys
import time


def load():
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"onnxruntime unavailable: {e}", file=sys.stderr)
        return None
    return np, ort


def session(ort, model, threads, spin=True):
    """A CPU session of `model` with `threads` intra-op threads (one inter-op
    thread); idle threads sleep instead of spinning when `spin` is false."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def each_model(models, report):
    """Prints `model=<path> <report(path)>` for each model, or
    `model=<path> error=<message>` when it fails, and goes on with the next."""
    for model in models:
        try:
            print(f"model={model} {report(model)}", flush=True)
        except Exception as e:  # report and go on with the next model
            print(f"model={model} error={type(e).__name__}: {e}".replace("\n", " "), flush=True)


class Bench:
    """One onnxruntime session on one random input."""

    def __init__(self, np, ort, model, batch, c, h, w, threads, spin=True):
        self.session = session(ort, model, threads, spin)
        x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
        self.feeds = {self.session.get_inputs()[0].name: x}
        for _ in range(3):
            self.session.run(None, self.feeds)

    def time(self, runs):
        times = []
        for _ in range(max(runs, 1)):
            t = time.perf_counter()
            self.session.run(None, self.feeds)
            times.append(time.perf_counter() - t)
        times.sort()
        return (
            f"median_ms={times[len(times) // 2] * 1e3:.6f} "
            f"min_ms={times[0] * 1e3:.6f} runs={len(times)}"
        )


def parse(args):
    model = args[0]
    batch, c, h, w, threads, runs = (int(a) for a in args[1:])
    return model, (batch, c, h, w, threads), runs


def serve(np, ort) -> int:
    sessions = {}
    for line in sys.stdin:
        args = line.split()
        if not args:
            continue
        try:
            spin = args[7:] == ["spin"]
            model, dims, runs = parse(args[:7])
            key = (model, dims, spin)
            if key not in sessions:
                sessions[key] = Bench(np, ort, model, *dims, spin=spin)
            print(sessions[key].time(runs), flush=True)
        except Exception as e:  # report and keep serving
            print(f"error={type(e).__name__}: {e}".replace("\n", " "), flush=True)
    return 0


def main() -> int:
    serving = sys.argv[1:] == ["--serve"]
    if not serving and len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    libs = load()
    if libs is None:
        return 3
    if serving:
        return serve(*libs)
    model, dims, runs = parse(sys.argv[1:])
    print(Bench(*libs, model, *dims).time(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run an ONNX model with onnxruntime (CPU) on .npy inputs; write each output
as OUT_DIR/output_<i>.npy.

    ort_run.py MODEL.onnx OUT_DIR INPUT.npy [INPUT.npy ...]

The model is first checked with onnx.checker. Used by the hasten-onnx tests to
compare Hasten's reference forward with onnxruntime.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    model, out_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    onnx.checker.check_model(onnx.load(model), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.load(path) for i, path in zip(session.get_inputs(), inputs)}
    outputs = session.run(None, feeds)
    os.makedirs(out_dir, exist_ok=True)
    for k, y in enumerate(outputs):
        np.save(os.path.join(out_dir, f"output_{k}.npy"), np.asarray(y, dtype=np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Quantize an ONNX float model with onnxruntime's own static int8
quantization, and run the result on an input.

    ort_quantize.py MODEL.onnx CALIB.npy OUT.onnx FORMAT [INPUT.npy OUTPUT.npy]

CALIB.npy is an NCHW float32 batch; each sample is one calibration example
(min–max calibration). FORMAT is `qoperator` (QLinearConv and friends) or
`qdq` (QuantizeLinear / DequantizeLinear pairs around float ops).
Activations are uint8 with a zero point, weights int8 symmetric per output
channel: onnxruntime's defaults for CPU. With INPUT.npy the quantized model
also runs on it (2 threads) and its first output is written to OUTPUT.npy.
Used by the hasten-onnx tests and the int8 comparisons of the examples.
"""
import logging
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)


class Batches(CalibrationDataReader):
    """Feeds the calibration batch one sample at a time."""

    def __init__(self, name: str, data: np.ndarray):
        self.samples = iter([{name: data[i : i + 1]} for i in range(data.shape[0])])

    def get_next(self):
        return next(self.samples, None)


def main() -> int:
    if len(sys.argv) not in (5, 7):
        print(__doc__, file=sys.stderr)
        return 2
    model, calib, out, fmt = sys.argv[1:5]
    formats = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}
    if fmt not in formats:
        print(f"unknown format {fmt!r}: qoperator or qdq", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process
    data = np.load(calib).astype(np.float32)
    name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(
        model,
        out,
        Batches(name, data),
        quant_format=formats[fmt],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    if len(sys.argv) == 7:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
        y = session.run(None, {name: np.load(sys.argv[5]).astype(np.float32)})[0]
        np.save(sys.argv[6], np.asarray(y, dtype=np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())

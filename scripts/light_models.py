#!/usr/bin/env python3
"""Prepare the real topologies of the PyPI onnx package's backend test data
(onnx/backend/test/data/light/*.onnx) for the hasten-onnx conformance test.

    light_models.py OUT_DIR

Their weights are ConstantOfShape placeholders: each is replaced by a seeded
random initializer of a scale that keeps activations finite (He-normal
filters, batch-norm scales near 1, positive variances), and a final Softmax
is dropped so that logits are compared. The models (opset 9)
are converted to opset 13, checked, run with onnxruntime on a seeded input,
and written as OUT_DIR/<name>.onnx, <name>_input.npy, <name>_output.npy, with
the list of names in OUT_DIR/models.txt.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, version_converter


def substitute(model, rng):
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for k, name in enumerate(n.input):
            consumers.setdefault(name, (n.op_type, k))
    keep = []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep.append(n)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
        op, k = consumers.get(n.output[0], ("", 0))
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if op != "MatMul" else shape[0]
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        elif op == "BatchNormalization" and k == 4:
            value = 1.0 + 0.2 * np.abs(rng.standard_normal(shape))
        elif (op == "BatchNormalization" and k == 1) or op == "Mul":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            value = 0.1 * rng.standard_normal(shape)
        g.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
    del g.node[:]
    g.node.extend(keep)
    produced = {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    used = {i for n in g.node for i in n.input}
    inputs = [i for i in g.input if i.name not in produced]
    del g.input[:]
    g.input.extend(inputs)
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    # Initializers no longer double as graph inputs, which needs IR >= 4.
    model.ir_version = 7
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
    names = []
    for file in sorted(os.listdir(light)):
        if not file.endswith(".onnx"):
            continue
        name = file[: -len(".onnx")]
        rng = np.random.default_rng(0)
        model = substitute(onnx.load(os.path.join(light, file)), rng)
        # Compare logits, not the saturated softmax of random weights.
        g = model.graph
        if g.node[-1].op_type == "Softmax" and g.node[-1].output[0] == g.output[0].name:
            logits = g.node[-1].input[0]
            del g.node[-1]
            del g.output[:]
            g.output.append(onnx.helper.make_empty_tensor_value_info(logits))
        model = version_converter.convert_version(model, 13)
        onnx.checker.check_model(model)
        path = os.path.join(out, name + ".onnx")
        onnx.save(model, path)
        inp = model.graph.input[0]
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        x = rng.standard_normal(shape).astype(np.float32)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = session.run(None, {inp.name: x})[0]
        np.save(os.path.join(out, name + "_input.npy"), x)
        np.save(os.path.join(out, name + "_output.npy"), y.astype(np.float32))
        names.append(name)
    with open(os.path.join(out, "models.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()

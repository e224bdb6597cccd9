"""int8 with one activation scale per token: the ONNX graph rewrite behind the onnx backend's CPU default.
Needs onnx and numpy only; no grpc, no torch.

Every MatMul whose second input is a constant weight matrix becomes, with ``x`` its activations reshaped to
rows (one per token) of ``K`` values:

- the weights quantized once, symmetric int8 with one scale per output column;
- each row of ``x`` quantized when the graph runs, symmetric with its own scale (its largest magnitude over
  127), stored as uint8 around the zero point 128 (``QuantizeLinear`` along the rows);
- ``MatMulIntegerToFloat`` (ONNX Runtime's fused int8 product, exact int32 sums, then the columns' scales),
  then each row times its own scale.

A token's row is quantized from its own values only, so a text's vector no longer depends on the other texts
in its batch. ONNX Runtime's dynamic quantization (``quantize_dynamic``) takes one scale for the whole
activation tensor: there a text's vector changed with its batchmates (cosine 0.984 alone against in a batch)
and one outlier token cost every other token its precision (min cosine 0.971 to fp32 on 2,000 code chunks;
per token, 0.996). What it costs: three cheap passes over each product's input (abs, row maximum, quantize)
and one over its output (the rows' scales); the products themselves run in int8 (VNNI or AMX where the CPU has
them). docs/EMBEDDING.md has the measurements.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCHEME = "int8: per-token symmetric activations (uint8, zero point 128), per-column symmetric int8 weights"
_EPS = 1e-8  # the smallest row scale numerator: an all-zero row quantizes to zeros, not to NaN


def _weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column: (quantized, scales)."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32) / np.float32(127.0)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def quantize_per_token(src: str | Path, dst: str | Path) -> int:
    """Write ``src``'s graph to ``dst`` with every constant-weight MatMul in int8 as above; the number
    rewritten. Other nodes (attention's products of two activations, softmax, norms) stay fp32."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    shared = {"q8_eps": np.array(_EPS, np.float32), "q8_127": np.array(127.0, np.float32),
              "q8_one": np.array(1.0, np.float32), "q8_zp": np.array(128, np.uint8),
              "q8_axis1": np.array([1], np.int64), "q8_start": np.array([0], np.int64),
              "q8_end": np.array([-1], np.int64)}
    added = [numpy_helper.from_array(v, k) for k, v in shared.items()]
    nodes = []
    rewritten = 0
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        more_nodes, more_weights = _rewrite(node, numpy_helper.to_array(w).astype(np.float32), f"q8_{rewritten}")
        nodes += more_nodes
        added += more_weights
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for nd in graph.node for i in nd.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return rewritten


def _rewrite(node, w: np.ndarray, p: str) -> tuple[list, list]:
    """The nodes that replace MatMul ``node`` (activations x the weights ``w``, [K, N]) and their new
    constants, every name prefixed with ``p``."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    wq, ws = _weight(w)
    constants = [numpy_helper.from_array(wq, f"{p}_wq"), numpy_helper.from_array(ws, f"{p}_ws"),
                 numpy_helper.from_array(np.array([-1, k], np.int64), f"{p}_rows"),
                 numpy_helper.from_array(np.array([n], np.int64), f"{p}_n")]
    x, out = node.input[0], node.output[0]
    zero_points = helper.make_tensor("zp", TensorProto.UINT8, [1], [128])
    nodes = []

    def op(kind: str, inputs: list[str], output: str, domain: str = "", **attrs) -> None:
        nodes.append(helper.make_node(kind, inputs, [output], name=output, domain=domain, **attrs))

    op("Reshape", [x, f"{p}_rows"], f"{p}_x2")                       # [tokens, K]
    op("Abs", [f"{p}_x2"], f"{p}_abs")
    op("ReduceMax", [f"{p}_abs"], f"{p}_amax", axes=[1], keepdims=0)  # [tokens]
    op("Max", [f"{p}_amax", "q8_eps"], f"{p}_amaxe")
    op("Div", [f"{p}_amaxe", "q8_127"], f"{p}_scale")
    op("Shape", [f"{p}_scale"], f"{p}_tokens")
    op("ConstantOfShape", [f"{p}_tokens"], f"{p}_zps", value=zero_points)
    op("QuantizeLinear", [f"{p}_x2", f"{p}_scale", f"{p}_zps"], f"{p}_xq", axis=0)
    op("MatMulIntegerToFloat", [f"{p}_xq", f"{p}_wq", "q8_one", f"{p}_ws", "q8_zp"], f"{p}_y",
       domain="com.microsoft")
    op("Unsqueeze", [f"{p}_scale", "q8_axis1"], f"{p}_col")
    op("Mul", [f"{p}_y", f"{p}_col"], f"{p}_y2")                      # each row times its own scale
    op("Shape", [x], f"{p}_xshape")
    op("Slice", [f"{p}_xshape", "q8_start", "q8_end"], f"{p}_lead")
    op("Concat", [f"{p}_lead", f"{p}_n"], f"{p}_shape", axis=0)
    nodes.append(helper.make_node("Reshape", [f"{p}_y2", f"{p}_shape"], [out], name=f"{p}_out"))
    return nodes, constants

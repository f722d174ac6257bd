"""The PyTorch reference: the model card's recipe (AutoModel, pooling over the attention mask, L2 norm)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import ExportDependencyError

REPORT_SECONDS = 30.0


def load_reference_model(directory: Path, allow_pickle: bool = False):  # -> transformers.PreTrainedModel
    """The checkpoint as transformers loads it, float32, in eval mode."""
    torch, transformers = _import_torch()
    model = transformers.AutoModel.from_pretrained(str(directory), use_safetensors=not allow_pickle)
    return model.float().eval()


def reference_embeddings(model, directory: Path, texts: list[str], pooling: str, max_length: int,
                         batch_size: int = 16, progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Normalized float32 embeddings of `texts`, computed with torch and the transformers tokenizer; `progress`
    hears how far it got about every REPORT_SECONDS (a large model takes many minutes)."""
    torch, transformers = _import_torch()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    vectors = []
    reported = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            if progress is not None and time.perf_counter() - reported > REPORT_SECONDS:
                progress(f"      {start} of {len(texts)} texts")
                reported = time.perf_counter()
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            vectors.append(_pool(torch, hidden.float(), batch["attention_mask"], pooling))
    embeddings = torch.nn.functional.normalize(torch.cat(vectors), dim=-1)
    return embeddings.numpy().astype(np.float32)


def _pool(torch, hidden, mask, pooling: str):
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.masked_fill(weights == 0, float("-inf")).max(1).values


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ExportDependencyError("torch") from None
    try:
        import transformers
    except ImportError:
        raise ExportDependencyError("transformers") from None
    return torch, transformers

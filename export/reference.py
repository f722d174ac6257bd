"""The PyTorch reference: the model card's recipe (AutoModel, pooling over the attention mask, L2 norm)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgembed.runtime.batching import plan_batches
from edgembed.runtime.errors import MissingDependencyError

from .errors import EXPORT_INSTALL

# Padded tokens per PyTorch batch, over texts sorted by length; at most BATCH_SIZE texts per batch.
BATCH_TOKENS = 8192
BATCH_SIZE = 64


def load_reference_model(directory: Path, allow_pickle: bool = False):  # -> transformers.PreTrainedModel
    """The checkpoint as transformers loads it, float32, in eval mode."""
    torch, transformers = _import_torch()
    model = transformers.AutoModel.from_pretrained(str(directory), use_safetensors=not allow_pickle)
    return model.float().eval()


def reference_token_ids(directory: Path, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's token ids from the transformers tokenizer, truncated at `max_length`."""
    _, transformers = _import_torch()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def reference_embeddings(model, directory: Path, texts: list[str], pooling: str, max_length: int, *,
                         token_ids: list[list[int]] | None = None, batch_tokens: int = BATCH_TOKENS,
                         batch_size: int = BATCH_SIZE, status: Callable[[str], None] | None = None) -> np.ndarray:
    """Normalized float32 embeddings of `texts`, computed with torch and the transformers tokenizer.

    Texts are tokenized once (or `token_ids` from reference_token_ids are used), sorted by length and batched by
    `batch_tokens` padded tokens (at most `batch_size` texts), so short texts are not padded to long ones;
    results come back in input order. `status` hears how far it got after every batch.
    """
    torch, _ = _import_torch()
    encoded = token_ids if token_ids is not None else reference_token_ids(directory, texts, max_length)
    lengths = [len(ids) for ids in encoded]
    vectors: np.ndarray | None = None
    done = 0
    with torch.inference_mode():
        for rows in plan_batches(lengths, batch_size, batch_tokens):
            ids, mask = _padded(torch, [encoded[row] for row in rows])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = torch.nn.functional.normalize(_pool(torch, hidden.float(), mask, pooling), dim=-1)
            if vectors is None:
                vectors = np.empty((len(texts), pooled.shape[1]), np.float32)
            vectors[rows] = pooled.numpy()
            done += len(rows)
            if status is not None:
                status(f"{done} of {len(texts)} texts")
    return vectors if vectors is not None else np.empty((0, 0), np.float32)


def _padded(torch, rows: list[list[int]]):
    """Token ids padded on the right to the longest row, and the attention mask (1 for real tokens and 0 for
    padding, so the padding's id does not matter)."""
    longest = max(len(row) for row in rows)
    ids = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for number, row in enumerate(rows):
        ids[number, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[number, :len(row)] = 1
    return ids, mask


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
        raise MissingDependencyError("torch", "export", install=EXPORT_INSTALL) from None
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "export", install=EXPORT_INSTALL) from None
    return torch, transformers

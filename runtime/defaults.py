"""The runtime's defaults, once: Embedder's keywords, the option values, the CLI flags and the server refer here."""
from __future__ import annotations

# Texts per batch at most.
BATCH_SIZE = 32
# Padded tokens per batch (rows x longest row) at most: bounds activation memory per call.
MAX_BATCH_TOKENS = 16384
# The least cosine to PyTorch, recorded at export, that variant/backend "auto" accepts.
AUTO_MIN_COSINE = 0.99
# With chunking and no chunk_overlap, neighbouring windows share max_length // this many tokens.
CHUNK_OVERLAP_FRACTION = 8
# How the model files are checked at load: their recorded sizes (sha256 reads every byte, on demand).
VERIFY = "size"
PRECISION = "float32"

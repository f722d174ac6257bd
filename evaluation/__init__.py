"""edgembed evaluation: how close each variant is to a reference and how fast it is; the real English texts
used for calibration and evaluation. Torch-free: it runs variants through edgembed.runtime."""
from .corpus import calibration_texts, evaluation_set
from .evaluate import cosine_per_row, evaluate_directory, evaluate_embedder, top_k_overlap
from .text_files import read_texts

__all__ = ["calibration_texts", "cosine_per_row", "evaluate_directory", "evaluate_embedder", "evaluation_set",
           "read_texts", "top_k_overlap"]

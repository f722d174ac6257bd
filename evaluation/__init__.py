"""edgembed evaluation: how close each variant is to a reference and how fast it is; the suite of real texts in
several domains and scripts used for calibration and evaluation. Torch-free: it runs variants through
edgembed.runtime."""
from .corpus import evaluation_set
from .domains import DOMAIN_NAMES, calibration_set, calibration_texts, evaluation_suite
from .evaluate import cosine_per_row, evaluate_directory, evaluate_embedder, top_k_overlap
from .text_files import read_texts

__all__ = ["DOMAIN_NAMES", "calibration_set", "calibration_texts", "cosine_per_row", "evaluate_directory",
           "evaluate_embedder", "evaluation_set", "evaluation_suite", "read_texts", "top_k_overlap"]

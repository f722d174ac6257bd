"""How much top-10 overlap a variant's cosine allows on each domain, and whether its error spends it well.

    python benchmarks/ranking_noise.py --model minilm --out benchmarks/results/fidelity/ranking-noise

The evaluation suite (100 queries x 1,000 documents per domain) is embedded by the export's fp32 ONNX variant (the
reference) and by edgembed's q8 variants, in one run. Per domain and variant it prints the variant's top-10
overlap beside the overlap of the reference plus random noise of the same cosine for each text (isotropic: every
direction equally likely), and the cosine that random noise needs for 0.95. It also prints how crowded the
domain's neighbours are (the reference's 10th-nearest similarity and its gap to the 11th) and how much of the
variant's error lies in the ten directions along which the domain's texts differ most, against what random noise
puts there (10 / dimension).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import fidelity
import numpy as np

from edgembed.evaluation.domains import TOP10_GOAL

HERE = Path(__file__).resolve().parent
COSINES = (0.99995, 0.9999, 0.9998, 0.9995, 0.999, 0.998, 0.995)  # the noise levels tried, finest first
SEEDS = 5  # noise draws averaged per figure
DIRECTIONS = 10  # the domain's principal directions the error is measured in


def with_noise(reference: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each unit row of `reference` turned by a random direction to the given cosine with itself."""
    noise = rng.standard_normal(reference.shape).astype(np.float32)
    noise -= (noise * reference).sum(axis=1, keepdims=True) * reference  # orthogonal to the row
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    turned = reference + noise * np.tan(np.arccos(np.clip(cosines, -1.0, 1.0)))[:, None]
    return turned / np.linalg.norm(turned, axis=1, keepdims=True)


def noisy_overlap(reference: np.ndarray, queries: slice, documents: slice, cosines: np.ndarray,
                  rng: np.random.Generator) -> float:
    from edgembed.evaluation.evaluate import top_k_overlap

    draws = [top_k_overlap(with_noise(reference[queries], cosines[queries], rng),
                           with_noise(reference[documents], cosines[documents], rng),
                           reference[queries], reference[documents]) for _ in range(SEEDS)]
    return float(np.mean(draws))


def error_in_main_directions(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Share of the error's energy in the reference's DIRECTIONS principal directions."""
    centred = reference - reference.mean(axis=0)
    directions = np.linalg.svd(centred, full_matrices=False)[2][:DIRECTIONS]
    error = vectors - reference
    return float(((error @ directions.T) ** 2).sum() / (error ** 2).sum())


def domain_figures(vectors: np.ndarray, reference: np.ndarray, queries: slice, documents: slice,
                   rng: np.random.Generator) -> dict:
    from edgembed.evaluation.evaluate import cosine_per_row, top_k_overlap

    texts = slice(queries.start, documents.stop)
    cosines = cosine_per_row(vectors, reference)
    curve = {cosine: noisy_overlap(reference, queries, documents, np.full(len(reference), cosine), rng)
             for cosine in COSINES}
    reaching = [cosine for cosine, overlap in curve.items() if overlap >= TOP10_GOAL]
    similarities = -np.sort(-(reference[queries] @ reference[documents].T), axis=1)
    return {"top10": top_k_overlap(vectors[queries], vectors[documents], reference[queries], reference[documents]),
            "cos_mean": float(cosines[texts].mean()),
            "top10_random_same_cosines": noisy_overlap(reference, queries, documents, cosines, rng),
            "random_noise_curve": {str(cosine): overlap for cosine, overlap in curve.items()},
            "lowest_cosine_for_goal": min(reaching) if reaching else None,
            "tenth_similarity": float(np.median(similarities[:, 9])),
            "gap_10th_11th": float(np.median(similarities[:, 9] - similarities[:, 10])),
            "error_share_main_directions": error_in_main_directions(vectors[texts], reference[texts]),
            "random_share_main_directions": DIRECTIONS / reference.shape[1]}


def measure(export: Path, threads: int) -> dict:
    from edgembed.evaluation.domains import evaluation_suite

    suite = evaluation_suite()
    texts = suite.flatten()
    reference = fidelity.embed(export, {"format": "onnx", "dtype": "fp32"}, texts, threads)
    rows: dict[str, dict] = {}
    for name, spec in fidelity.own_specs(export).items():
        vectors = fidelity.embed(export, spec, texts, threads)
        rng = np.random.default_rng(0)
        rows[name] = {domain: domain_figures(vectors, reference, queries, documents, rng)
                      for domain, (queries, documents) in suite.spans().items()}
        for domain, row in rows[name].items():
            print(f"{name} {domain}: top-10 {row['top10']:.3f}, random noise of the same cosines "
                  f"{row['top10_random_same_cosines']:.3f}", file=sys.stderr, flush=True)
    return {"texts": len(texts), "rows": rows}


def markdown(results: dict) -> str:
    lines = [f"# Top-10 overlap against the error's size and direction: {results['model']}", "",
             f"Host: {results['cpu']} ({results['isa']}); {results['seconds']:.0f} s; {results['texts']} texts, "
             "against the export's fp32 ONNX variant. `random` = the reference plus isotropic noise of the variant's "
             f"own cosine per text (mean of {SEEDS} draws); `cosine for {TOP10_GOAL}` = the lowest of "
             f"{', '.join(map(str, COSINES))} at which such noise keeps top-10 >= {TOP10_GOAL}; `error in top "
             f"{DIRECTIONS}` = share of the variant's error along the domain's {DIRECTIONS} principal directions "
             "(random noise: 10 / dimension).", ""]
    for name, domains in results["rows"].items():
        lines += [f"## {name}", "",
                  f"| domain | cos mean | top-10 | random, same cosines | cosine for {TOP10_GOAL} | 10th similarity | "
                  f"gap 10th-11th | error in top {DIRECTIONS} (random) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for domain, row in domains.items():
            goal = row["lowest_cosine_for_goal"]
            lines.append(f"| {domain} | {row['cos_mean']:.4f} | {row['top10']:.3f} | "
                         f"{row['top10_random_same_cosines']:.3f} | {goal if goal is not None else '-'} | "
                         f"{row['tenth_similarity']:.3f} | {row['gap_10th_11th']:.4f} | "
                         f"{row['error_share_main_directions']:.3f} ({row['random_share_main_directions']:.3f}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm or tiny, as in benchmarks/fidelity.py")
    parser.add_argument("--export", type=Path, help="an existing export with fp32 and q8 (default: export into WORK)")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "ranking-noise")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fidelity" / "ranking-noise")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    export = fidelity.ensure_export(args)
    from edgembed.runtime.cpu import cpu_model

    results = {"model": args.model if not args.export else str(args.export), "isa": fidelity.isa(),
               "cpu": cpu_model(), **measure(export, args.threads)}
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ranking-noise.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "ranking-noise.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

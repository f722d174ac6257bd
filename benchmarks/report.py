"""Ratios to the PyTorch reference as a terminal table, results.md and a PNG chart."""
from __future__ import annotations

from pathlib import Path

from engines import REFERENCE

# column -> (workload, metric, higher_is_better, unit of the absolute value)
COLUMNS = {
    "query p50": ("query", "p50_ms", False, "ms"),
    "query p99": ("query", "p99_ms", False, "ms"),
    "batch 32": ("batch", "median_s", False, "s"),
    "corpus": ("corpus", "texts_per_s", True, "texts/s"),
    "cold start": ("cold", "median_s", False, "s"),
}


def _value(engine: dict, column: str) -> float | None:
    workload, metric, _, _ = COLUMNS[column]
    entry = engine.get(workload) or {}
    value = entry.get(metric)
    return float(value) if value is not None else None


def speedups(model: dict) -> dict[str, dict[str, float | None]]:
    """engine -> column -> speed-up over the reference (reference time / engine time; throughput engine / ref)."""
    engines = model.get("engines", {})
    reference = engines.get(REFERENCE, {})
    table: dict[str, dict[str, float | None]] = {}
    for name, engine in engines.items():
        row: dict[str, float | None] = {}
        for column, (_, _, higher, _) in COLUMNS.items():
            mine, ref = _value(engine, column), _value(reference, column)
            row[column] = None if not mine or not ref else (mine / ref if higher else ref / mine)
        table[name] = row
    return table


def _cell(engine: dict, column: str, ratio: float | None) -> str:
    workload = COLUMNS[column][0]
    if "error" in engine or "error" in (engine.get(workload) or {}):
        return "error"
    return "-" if ratio is None else f"{ratio:.2f}x"


def _absolute(engine: dict, column: str) -> str:
    workload, _, _, unit = COLUMNS[column]
    if "error" in engine or "error" in (engine.get(workload) or {}):
        return "error"
    value = _value(engine, column)
    if value is None:
        return "-"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.3g} {unit}"


def _rows(model: dict, absolute: bool) -> list[list[str]]:
    """One row per engine; the absolute table adds the load other processes put on the machine meanwhile."""
    ratios = speedups(model)
    rows = []
    for name, engine in model.get("engines", {}).items():
        cells = [_absolute(engine, c) if absolute else _cell(engine, c, ratios[name][c]) for c in COLUMNS]
        cosine, other = engine.get("cosine_min"), engine.get("other_load_cores")
        rows.append([name, *cells, "-" if cosine is None else f"{cosine:.4f}"])
        if absolute:
            rows[-1].append("-" if other is None else f"{other:.2f}")
    return rows


def _header(absolute: bool) -> list[str]:
    return [*HEADER, "other load"] if absolute else HEADER


def _tokens(model: dict) -> str:
    counts = model.get("texts", {}).get("token_counts", {})
    if not counts:
        return ""
    passages, corpus = counts["passages"], counts["corpus"]
    return (f"tokens (with specials, before truncation at {model.get('max_length')}): query {counts['query']}; "
            f"batch {passages['texts']} x {passages['min']}-{passages['max']} (mean {passages['mean']:.0f}); "
            f"corpus {corpus['texts']} texts of {corpus['min']}-{corpus['max']} (mean {corpus['mean']:.0f})")


def load_note(results: dict) -> str:
    """A warning when other processes kept the CPU busy: the numbers are then not trustworthy."""
    other, cores = results["machine"].get("other_load_cores"), results["machine"].get("cores") or 1
    if other is None:
        return ""
    text = f"other processes used {other:.2f} of {cores} cores on average during the run"
    return text + (" - WARNING: a busy machine; rerun on an idle one" if other > 0.25 else "")


def _errors(model: dict) -> list[str]:
    found = []
    for name, engine in model.get("engines", {}).items():
        if "error" in engine:
            found.append(f"{name}: {engine['error']}")
        for workload in ("query", "batch", "corpus", "cold"):
            entry = engine.get(workload) or {}
            if "error" in entry:
                found.append(f"{name} ({workload}): {entry['error']}")
    return found


HEADER = ["engine", *COLUMNS, "cos min"]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def terminal(results: dict) -> str:
    """Fixed-width speed-up and absolute tables, one pair per model."""
    out = []
    for model_name, model in results["models"].items():
        if "error" in model:
            out.append(f"\n{model_name}: error: {model['error']}")
            continue
        out.append(f"\n{model_name}: {_tokens(model)}")
        for title, absolute in (("speed-up over pytorch (higher is better)", False), ("absolute", True)):
            rows = [_header(absolute), *_rows(model, absolute)]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            out.append(f"\n{model_name} ({results['threads']} threads): {title}")
            for index, row in enumerate(rows):
                out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                     for i, (cell, w) in enumerate(zip(row, widths))))
                if index == 0:
                    out.append("  ".join("-" * w for w in widths))
        out.extend(f"  ! {line[:300]}" for line in _errors(model))
    if load_note(results):
        out.append("\n" + load_note(results))
    return "\n".join(out)


def markdown(results: dict) -> str:
    """results.md: how it was run, then per model the speed-up table, the absolute table and any errors."""
    machine, versions = results["machine"], results["versions"]
    lines = ["# edgembed benchmark", "",
             f"`{results['command']}`", "",
             f"{results['date']} · {machine['cpu']} · {machine['cores']} cores · flags: "
             + (", ".join(f for f, on in machine["flags"].items() if on) or "none of " + ", ".join(machine["flags"]))
             + f" · {results['threads']} threads for every engine", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
             "Speed-up = PyTorch reference time / engine time (corpus: engine texts/s / reference texts/s); "
             "`cos min` = smallest cosine to the reference's vectors over the corpus (else the batch); "
             "`other load` = cores used by other processes while the engine was measured.", ""]
    if load_note(results):
        lines += [_sentence(load_note(results)), ""]
    for model_name, model in results["models"].items():
        lines.append(f"## {model_name}")
        lines.append("")
        if "error" in model:
            lines += [f"error: {model['error']}", ""]
            continue
        if _tokens(model):
            lines += [_sentence(_tokens(model)), ""]
        for title, absolute in (("Speed-up over PyTorch", False), ("Absolute", True)):
            header = _header(absolute)
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                      "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in _rows(model, absolute)]
            lines.append("")
        errors = _errors(model)
        if errors:
            lines += ["Errors:", ""] + [f"- {e[:500]}" for e in errors] + [""]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> Path | None:
    """Grouped bars: one panel per model, workloads on x, one bar per engine, speed-up on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {name: m for name, m in results["models"].items() if "error" not in m and m.get("engines")}
    if not models:
        return None
    everyone = list(dict.fromkeys(name for m in models.values() for name in m["engines"] if name != REFERENCE))
    colors = {name: plt.get_cmap("tab20")(index % 20) for index, name in enumerate(everyone)}  # same in every panel
    fig, axes = plt.subplots(len(models), 1, figsize=(13, 4.2 * len(models)), squeeze=False)
    for ax, (model_name, model) in zip(axes[:, 0], models.items()):
        ratios = speedups(model)
        names = [n for n in ratios if n != REFERENCE and any(v is not None for v in ratios[n].values())]
        width = 0.8 / max(len(names), 1)
        for index, name in enumerate(names):
            values = [ratios[name][c] or float("nan") for c in COLUMNS]
            positions = [x - 0.4 + width * (index + 0.5) for x in range(len(COLUMNS))]
            ax.bar(positions, values, width, label=name, color=colors[name])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(COLUMNS)), list(COLUMNS))
        ax.set_ylabel("speed-up over PyTorch")
        ax.set_title(f"{model_name} ({results['threads']} threads)")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Imports point one way (docs/architecture.md): runtime/ is only a library, with no command-line or file-format
code and no other edgembed package; evaluation/ uses only the names edgembed.runtime exports."""
from __future__ import annotations

import ast
from pathlib import Path

import edgembed.runtime

REPO = Path(__file__).resolve().parents[1]
# Folder -> package, as pyproject's package-dir maps them.
PACKAGES = {"runtime": "edgembed.runtime", "evaluation": "edgembed.evaluation"}
NOT_IN_THE_RUNTIME = ("argparse", "pyarrow", "torch", "transformers", "optimum")


def imports(folder: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(file, absolute module, imported names) of every import statement under `folder`, lazy ones included."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        package = ".".join([PACKAGES[folder], *path.relative_to(REPO / folder).parent.parts])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = path.relative_to(REPO).as_posix()
            if isinstance(node, ast.Import):
                found += [(name, alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                found.append((name, module, tuple(alias.name for alias in node.names)))
    return found


def test_the_runtime_imports_no_cli_file_format_or_other_edgembed_package():
    wrong = [(file, module) for file, module, _ in imports("runtime")
             if module.split(".")[0] in NOT_IN_THE_RUNTIME
             or (module.startswith("edgembed.") and not module.startswith("edgembed.runtime"))]
    assert wrong == [], "runtime/ is a library: move command-line and file-format code to cli/ or jobs/"


def test_evaluation_uses_only_the_runtimes_public_api():
    used = [(file, module, names) for file, module, names in imports("evaluation")
            if module.startswith("edgembed.runtime")]
    private = [(file, module, names) for file, module, names in used
               if module != "edgembed.runtime" or not set(names) <= set(edgembed.runtime.__all__)]
    assert used and private == [], "import from edgembed.runtime what its __init__ exports"

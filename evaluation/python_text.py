"""Text read from the running CPython itself: its help topics, and the functions and docstrings of its standard
library (parsed with `ast`, never imported). All of it is Python documentation and source under the PSF licence
(PSF-2.0); nothing is copied into edgembed."""
from __future__ import annotations

import ast
import functools
import sysconfig
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LONG_WORDS = 450  # a long document has at least this many words: more than 512 tokens in English word pieces
LONG_CAP_WORDS = 1500  # and is cut to this many, so one document costs at most about 2,000 tokens


@dataclass(frozen=True)
class StdlibFunction:
    """A documented function of the standard library: where it is, its docstring's summary and its code."""

    name: str  # module.qualified_name, e.g. textwrap.dedent
    summary: str  # the docstring's first paragraph, on one line
    code: str  # the function's source without its docstring


def stdlib_sources() -> list[Path]:
    """The standard library's modules and packages one level down, tests left out, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [path for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py"))
            if "test" not in path.parent.name and not path.name.startswith("test")]


def _parsed(path: Path) -> tuple[str, ast.Module] | None:
    try:
        source = path.read_text(encoding="utf-8")
        return source, ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _module_name(path: Path) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions(module: str, source: str, tree: ast.Module) -> list[StdlibFunction]:
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(child)
                body_lines = child.end_lineno - child.lineno + 1
                if doc and 3 <= body_lines <= 60 and isinstance(child.body[0], ast.Expr):
                    start = (child.decorator_list[0].lineno if child.decorator_list else child.lineno) - 1
                    docstring = child.body[0]
                    kept = lines[start:docstring.lineno - 1] + lines[docstring.end_lineno:child.end_lineno]
                    code = "\n".join(kept).strip("\n")
                    summary = " ".join(doc.split("\n\n")[0].split())
                    if code.count("\n") >= 2:
                        found.append(StdlibFunction(f"{module}.{prefix}{child.name}", summary, code))

    visit(tree, "")
    return found


@dataclass(frozen=True)
class StdlibText:
    """What the standard library's sources give, from one parse of each."""

    docstrings: tuple[str, ...]  # of every module, class and function, in ast.walk order
    outline_docstrings: tuple[str, ...]  # of the modules and classes only
    functions: tuple[StdlibFunction, ...]  # documented functions and methods of 3 to 60 lines


# Where definitions can be: a statement's blocks, an except clause or a match case, never inside an expression.
_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _blocks(tree: ast.Module) -> Iterator[ast.AST]:
    """The module and its statements in ast.walk's order, without walking into expressions (most of the nodes)."""
    queue: deque[ast.AST] = deque([tree])
    while queue:
        node = queue.popleft()
        queue.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, _BLOCKS))
        yield node


@functools.lru_cache(maxsize=1)
def stdlib_text() -> StdlibText:
    docstrings: list[str] = []
    outline: list[str] = []
    functions: list[StdlibFunction] = []
    for path in stdlib_sources():
        parsed = _parsed(path)
        if not parsed:
            continue
        source, tree = parsed
        for node in _blocks(tree):
            if isinstance(node, (ast.Module, *_DEFINITIONS)) and (doc := ast.get_docstring(node)):
                docstrings.append(doc)
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    outline.append(doc)
        functions.extend(_functions(_module_name(path), source, tree))
    return StdlibText(tuple(docstrings), tuple(outline), tuple(functions))


def stdlib_functions() -> tuple[StdlibFunction, ...]:
    """Every documented function or method of 3 to 60 lines, with its summary and its code."""
    return stdlib_text().functions


def capped(text: str) -> str:
    """`text` on one line, cut to LONG_CAP_WORDS words."""
    return " ".join(text.split()[:LONG_CAP_WORDS])


@functools.lru_cache(maxsize=1)
def long_documentation() -> tuple[str, ...]:
    """Help topics and module or class docstrings of at least LONG_WORDS words, as written (see capped())."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)] + list(stdlib_text().outline_docstrings)
    return tuple(dict.fromkeys(text for text in texts if len(text.split()) >= LONG_WORDS))

"""Other tools' warnings, log lines and progress bars during an export: hidden unless --verbose.

Messages known to say nothing about the export are dropped; the ones that tell the user something come out as
notes in our words; any other warning comes out as a note naming the tool, so nothing that may matter is lost.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator

# Substrings of messages that say nothing about an export.
HIDDEN = (
    # ONNX Runtime's quantize_dynamic: its shape pre-processing serves static QDQ quantization, not the q8 recipe.
    "Please consider to run pre-processing before quantization",
    # ONNX Runtime's quantizer seeing the per-token MatMuls the recipe quantized before it ran, on purpose.
    "Please check if the model is already quantized",
    # ONNX Runtime's quantizer meeting those per-token MatMuls' contrib ops; their outputs are float, as it is told.
    "Failed to infer data type of tensor",
    # ONNX Runtime's symbolic shape inference (fp16 conversion) reasoning about symbolic dimensions.
    "Unable to determine if",
    # optimum: ties between weights exist in models with a task head; the exported encoder has none.
    "Weight deduplication check in the ONNX export requires accelerate",
)
# Substrings of messages that matter, and what we say instead.
REWORDED = (
    ("were not initialized from the model checkpoint",
     "the checkpoint lacks weights the model needs, and transformers filled them with random values: the export "
     "(and the PyTorch reference it is checked against) reproduces a partly random model"),
)
# Loggers of the tools the exporter drives, and the packages whose records on other loggers are theirs too.
TOOL_LOGGERS = ("optimum", "transformers", "nncf", "onnxruntime", "openvino", "torch", "symbolic_shape_infer")
TOOL_PACKAGES = ("optimum", "transformers", "nncf", "onnxruntime", "openvino", "torch", "onnx")
# Warning categories meant for developers of the code that raised them, not for the user of an export.
DEVELOPER_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def classify(message: str, tool: str) -> str | None:
    """What to show for `message` from `tool`: None to hide it, else a note line."""
    if any(hidden in message for hidden in HIDDEN):
        return None
    for found, note in REWORDED:
        if found in message:
            return f"note: {note}"
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"note from {tool}: {first}"


class _Route(logging.Handler):
    """Log records of the tools: warnings and errors become notes (or are hidden), the rest is dropped.

    As a filter on the root logger it takes the tools' records logged there (ONNX Runtime's quantizer logs on
    the root logger) away from the application's own handlers.
    """

    def __init__(self, note: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.note = note

    def emit(self, record: logging.LogRecord) -> None:
        line = classify(record.getMessage(), _tool(record.pathname, record.name.split(".")[0]))
        if line is not None:
            self.note(line)

    def filter(self, record: logging.LogRecord) -> bool:
        if _tool(record.pathname) not in TOOL_PACKAGES:
            return True
        if record.levelno >= self.level:
            self.emit(record)
        return False


@contextlib.contextmanager
def quiet_tools(verbose: bool, note: Callable[[str], None]) -> Iterator[None]:
    """Within the block, other tools speak through `note` only when they have something to say."""
    if verbose:
        yield
        return
    route = _Route(note)
    _configure_tool_loggers()
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate) for name in TOOL_LOGGERS}
    root = logging.getLogger()
    with warnings.catch_warnings(), _quiet_progress_bars(), _quiet_onnxruntime():
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: _warn(
            note, message, category, filename)
        for name in TOOL_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = [route], False
        root.addFilter(route)
        try:
            yield
        finally:
            for name, (handlers, propagate) in saved.items():
                logger = logging.getLogger(name)
                added = [handler for handler in logger.handlers if handler is not route and handler not in handlers]
                logger.handlers, logger.propagate = handlers + added, propagate
            root.removeFilter(route)


def _configure_tool_loggers() -> None:
    """transformers and optimum give their loggers a handler on first use: give it now, so it is replaced."""
    for module in ("transformers.utils.logging", "optimum.utils.logging"):
        try:
            __import__(module, fromlist=["get_logger"]).get_logger()
        except ImportError:
            pass


def _warn(note: Callable[[str], None], message, category, filename: str) -> None:
    if issubclass(category, DEVELOPER_WARNINGS) or category.__name__ == "TracerWarning":
        return  # TracerWarning: torch's notes on the trace, which the export's validation checks anyway
    line = classify(str(message), _tool(filename))
    if line is not None:
        note(line)


def _tool(path: str, fallback: str = "a library") -> str:
    """The package a source file belongs to: the folder after site-packages (`fallback` outside one)."""
    path = path.replace("\\", "/")
    return path.split("site-packages/")[-1].split("/")[0] if "site-packages/" in path else fallback


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """nncf draws its progress bars with rich's shared console; a quiet console draws nothing."""
    try:
        import rich
    except ImportError:
        yield
        return
    console = rich.get_console()
    before, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = before


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """ONNX Runtime's own (C++) log: errors only, then back to its default, warnings."""
    try:
        import onnxruntime
    except ImportError:
        yield
        return
    onnxruntime.set_default_logger_severity(3)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(2)

"""The job state file (`_job.json`): what a job embeds and with what, so a re-run resumes only the same job.

Three parts decide the vectors and must match to resume: the input (size, modification time, sha256 of its
first and last MiB: a cheap check that still sees appended rows, edits that change the size, and edits in
place through the time), the model (manifest.json's sha256, variant, backend, max_length) and the vector
options (prompt, dim, normalize, chunking, shard size). Execution options (batch size, threads, streams, the
bad-row policy, Ray or not) may change between runs; they are recorded, not enforced.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import JobStateError

STATE_FILE = "_job.json"
STATE_VERSION = 1
FINGERPRINT_BYTES = 1 << 20


def input_fingerprint(path: Path) -> dict[str, object]:
    """Size, modification time and sha256 of the first and last MiB of `path`."""
    stat = path.stat()
    with open(path, "rb") as handle:
        head = hashlib.sha256(handle.read(FINGERPRINT_BYTES)).hexdigest()
        handle.seek(max(0, stat.st_size - FINGERPRINT_BYTES))
        tail = hashlib.sha256(handle.read(FINGERPRINT_BYTES)).hexdigest()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head, "tail_sha256": tail}


def model_fingerprint(model) -> dict[str, object]:
    """What of a loaded Embedder decides its vectors."""
    manifest = Path(model.directory) / "manifest.json"
    return {"model_id": model.model_id, "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "variant": model.variant, "backend": model.backend, "max_length": model.max_length}


@dataclass(frozen=True)
class JobState:
    """The content of _job.json. `identity` decides resuming; the rest is for people and the summary."""

    identity: dict[str, object]
    details: dict[str, object]

    @property
    def job_id(self) -> str:
        """A short hash of the identity, written into every shard so a shard of another job is recognised."""
        text = json.dumps(self.identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self, status: str, summary: dict[str, object] | None = None) -> str:
        content = {"edgembed_job": STATE_VERSION, "job_id": self.job_id, "status": status,
                   "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   **self.identity, **self.details}
        if summary is not None:
            content["summary"] = summary
        return json.dumps(content, indent=2) + "\n"

    def write(self, directory: Path, status: str, summary: dict[str, object] | None = None) -> None:
        write_atomically(directory / STATE_FILE, self.to_json(status, summary).encode())


def read_state(directory: Path) -> dict[str, object] | None:
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except ValueError as exc:
        raise JobStateError(f"{path} is not JSON ({exc}); pass --overwrite to start the job over") from None
    if not isinstance(content, dict) or content.get("edgembed_job") != STATE_VERSION:
        raise JobStateError(f"{path} is not an edgembed job state file of version {STATE_VERSION}; pass "
                            "--overwrite to start the job over")
    return content


def check_same_job(previous: dict[str, object], state: JobState, where: Path) -> None:
    """JobStateError naming every difference between the job in `where` and this one."""
    differences = []
    for part, fields in state.identity.items():
        old = previous.get(part) or {}
        for name, value in fields.items():
            if old.get(name) != value:
                differences.append(_describe(part, name, old.get(name), value))
    if differences:
        raise JobStateError(f"{where} holds a different job: " + "; ".join(differences) + ". Pass --overwrite to "
                            "discard its shards and start over, or write to another VECTORS")


def _describe(part: str, name: str, old: object, new: object) -> str:
    if part == "input" and name == "mtime_ns":
        return (f"INPUT's modification time changed ({_when(old)} -> {_when(new)}); if only the time changed "
                f"(a copy), restore it with: touch -d @{int(old) / 1e9:.9f} INPUT" if isinstance(old, int) else
                "INPUT's modification time changed")
    if part == "model" and name in ("variant", "backend"):
        return f"the {name} was {old!r}, now {new!r} (pass --{name} {old} to resume)"
    return f"{part} {name} was {old!r}, now {new!r}"


def _when(value: object) -> str:
    if not isinstance(value, int):
        return repr(value)
    return datetime.datetime.fromtimestamp(value / 1e9).isoformat(timespec="seconds")


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

"""Running the runtime in a subprocess, natively or as an AVX2 CPU without VNNI (qemu-x86_64 -cpu Haswell)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-x86_64")
# .ci/run sets EDGEMBED_REQUIRE_QEMU, so there a missing qemu fails these tests instead of skipping them.
needs_qemu = pytest.mark.skipif(QEMU is None and not os.environ.get("EDGEMBED_REQUIRE_QEMU"),
                                reason="qemu-user is not installed (apt-get install qemu-user)")
EMBED = """
import json, sys
import numpy as np
from edgembed.runtime import Embedder, int8_path
out, backend, target = sys.argv[1], sys.argv[2], sys.argv[3]
texts = json.loads(sys.stdin.read())
model = Embedder.load(out, variant="q8", backend=backend, threads=2, streams=1)
np.save(target, model.encode(texts, batch_size=8))
print(json.dumps({"int8_path": int8_path().name, "describe": model.describe()}))
"""


def embed_q8(out: Path, backend: str, texts: list[str], target: Path, *, emulate: bool = False,
             force: str | None = None) -> dict:
    """Embed `texts` with the q8 variant into `target` (.npy); the emulated CPU or a forced int8 path on request."""
    command = [sys.executable, "-c", EMBED, str(out), backend, str(target)]  # texts on stdin: argv has a size limit
    env = {name: value for name, value in os.environ.items() if name != "EDGEMBED_INT8_PATH"}
    if force:
        env["EDGEMBED_INT8_PATH"] = force
    result = subprocess.run([QEMU, "-cpu", "Haswell", *command] if emulate else command, capture_output=True,
                            text=True, timeout=1800, env=env, input=json.dumps(texts))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])

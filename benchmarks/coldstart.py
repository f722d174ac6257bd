"""Cold-start child: `python coldstart.py SPEC_JSON TEXT` loads one engine, embeds TEXT, prints when.

Run by workloads.measure_cold in a fresh interpreter; the parent subtracts its own launch time.
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    from engines import EngineSpec, load_engine

    spec = EngineSpec(**json.loads(sys.argv[1]))
    vector = load_engine(spec).encode([sys.argv[2]], 1)
    first_vector_at = time.time()
    print("COLDSTART " + json.dumps({"first_vector_at": first_vector_at, "shape": list(vector.shape)}), flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: it is not part of the measurement


if __name__ == "__main__":
    main()

"""python -m edgembed: the same as the `edgembed` command."""
import sys

from .cli import main

sys.exit(main())

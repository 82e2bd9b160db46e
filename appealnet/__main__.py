"""python -m appealnet ... (same as the `appealnet` command)."""
import sys

from .cli import main

sys.exit(main())

"""Entry point: ``python bench/mechanism [--engine mock|claude|codex] ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mechanism.harness import main

sys.exit(main())

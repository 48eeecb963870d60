"""Make the shared toy helpers (``_engine_toy``) importable under pytest's importlib mode; the
worker scripts run as ``python tests/engine/_*.py`` and find it the same way (script folder)."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

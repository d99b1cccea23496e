"""--import-mode=importlib puts no test folder on sys.path; the resume tests' shared helpers live in _resume.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

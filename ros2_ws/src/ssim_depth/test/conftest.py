"""Fixtures of the package's tests: the repository's shared model fixtures (``tests/conftest.py``), reused.

That file is loaded under its own module name: both folders' conftest modules are called ``conftest``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[4]
_SHARED = REPOSITORY / "tests" / "conftest.py"

if not _SHARED.is_file():
    raise FileNotFoundError(
        f"{_SHARED} not found: the package's tests reuse the repository's test fixtures; run them from a "
        "repository checkout"
    )
_spec = importlib.util.spec_from_file_location("ssim_depth_shared_fixtures", _SHARED)
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

random_checkpoint = _shared.random_checkpoint
random_onnx = _shared.random_onnx
velocity_checkpoint = _shared.velocity_checkpoint
velocity_onnx = _shared.velocity_onnx

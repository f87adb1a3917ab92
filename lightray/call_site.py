"""Where the user's code created an object, for lightray.memory_summary()."""
from __future__ import annotations

import os
import sys

from .config import record_call_sites

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_enabled = []


def user_call_site() -> str | None:
    """"file.py:line" of the innermost frame outside lightray, or None when
    recording is turned off (LIGHTRAY_RECORD_CALL_SITES=0)."""
    if not _enabled:
        _enabled.append(record_call_sites())
    if not _enabled[0]:
        return None
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"

"""Where cattag keeps what it downloads or builds once: one setting for every cache.

CACHE is $CATTAG_CACHE, else $XDG_CACHE_HOME/cattag, else ~/.cache/cattag. Pretrained presets live in
CACHE/pretrained/, Prism in CACHE/prism/, the wheels they come from in CACHE/wheels/.
"""

from __future__ import annotations

import os
import pathlib

CACHE_ENV = "CATTAG_CACHE"


def cache_root() -> pathlib.Path:
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cattag"

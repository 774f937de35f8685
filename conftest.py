"""This repository's own test configuration: what `pytest tests` and `pytest suites` need here, and nothing a
project using the plugin needs (the plugin comes in through its ``pytest11`` entry point, never from here).

* pytester: the plugin's tests (tests/) run inner pytest sessions against the fake ComfyUI with it.
* suites/ on sys.path: the GPU suites import their variant matrix (suites/wan22_matrix.py) by module name,
  whatever the import mode.
* collect_ignore: the folders of data and tools are never collected as tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

pytest_plugins = ("pytester",)

SUITES = Path(__file__).resolve().parent / "suites"
if str(SUITES) not in sys.path:
    sys.path.insert(0, str(SUITES))

collect_ignore = ["workflows", "baselines", "tools"]

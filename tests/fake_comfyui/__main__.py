"""``python -m tests.fake_comfyui --listen H --port P``: the same as running main.py."""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parent / "main.py"), run_name="__main__")

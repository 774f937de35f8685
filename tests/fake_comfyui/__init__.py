"""A fake ComfyUI 0.8.0 server for the plugin's own tests (aiohttp; started like ComfyUI's main.py)."""

from __future__ import annotations

from pathlib import Path

#: The script to start: ``python MAIN --listen 127.0.0.1 --port N``.
MAIN = Path(__file__).resolve().parent / "main.py"

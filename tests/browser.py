"""Open a report page in headless Chromium: console messages, and what a probe script saw after load."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")

# Appended to a copy of the page: how many figures decoded, and how many sections there are.
PROBE = """<script>window.addEventListener("load", () => {
  const imgs = [...document.querySelectorAll("section.variant img.figure")];
  document.body.dataset.figuresDecoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.sections = document.querySelectorAll("section.variant").length;
  document.body.dataset.sectionsWithFigure =
    [...document.querySelectorAll("section.variant")].filter(s => s.querySelector("img.figure")).length;
});</script>"""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH."""
    return next((p for name in CANDIDATES if (p := shutil.which(name))), None)


@dataclass(frozen=True)
class PageLoad:
    """What Chromium saw of a page."""

    dom: str
    console: list[str]
    probe: dict[str, int]


def open_page(browser: str, page: Path, profile: Path, timeout: float = 120.0) -> PageLoad:
    """Load a copy of `page` with the probe appended; return the DOM after load and every console message."""
    probed = page.with_name(".probe-" + page.name)
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        probed.unlink()
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    body = re.search(r"<body([^>]*)>", done.stdout)
    attrs = dict(re.findall(r'data-([\w-]+)="(\d+)"', body.group(1))) if body else {}
    return PageLoad(done.stdout, console, {k: int(v) for k, v in attrs.items()})


def screenshot(browser: str, page: Path, out: Path, profile: Path, size: str = "1400,2000") -> None:
    """A PNG of the page as Chromium draws it."""
    subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=120, check=True)

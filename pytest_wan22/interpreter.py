"""ComfyUI's interpreter: found the way ComfyUI is installed, and checked once before any server starts.

Finding it (`find`): an interpreter the user named (--wan22-python, ini wan22_python, env WAN22_PYTHON) wins;
otherwise the ComfyUI folder's own environment, as users install it: ``venv/`` or ``.venv/`` inside the folder
(``bin/python``; ``Scripts/python.exe`` on Windows), or on Windows the portable build's ``python_embeded``,
whose ComfyUI folder sits beside it; otherwise the interpreter running pytest.

Checking it (`check`): the interpreter runs a tiny script that imports torch and looks up every module the
ComfyUI folder's ``requirements.txt`` names for ComfyUI to start (the lines before ``#non essential``). The
folder's requirements are the measure, not a list of our own, because they are what that ComfyUI needs: a
release's requirements always name torch, tqdm, yaml and the rest, while a stand-in server is held to what it
says it needs (the plugin's own test fake lists aiohttp alone and runs on the interpreter running pytest, which
has no torch), and a folder without a requirements.txt is only asked to run. So a missing module is found once,
before any launch, instead of as a ComfyUI start crash in every test.

Three requirement lines are left out: the web front-end, the workflow templates and the embedded docs. The
launcher serves its own front-end folder (--front-end-root) and ComfyUI starts without the other two.

Plain Python (no pytest): the plugin calls it from pytest_configure and turns a failure into one usage error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import platforms

__all__ = ["CheckResult", "Interpreter", "candidates", "check", "find", "import_name", "portable_build", "problem",
           "required_modules"]

#: Why an interpreter was chosen, as the report header says it.
FOUND_IN_FOLDER = "found in the ComfyUI folder"
RUNNING_PYTEST = "the interpreter running pytest"

#: Distribution names (PEP 503 normalised) whose import name is not the name with '-' turned into '_'.
IMPORT_NAMES = {
    "pillow": "PIL", "pyyaml": "yaml", "opencv-python": "cv2", "opencv-python-headless": "cv2",
    "opencv-contrib-python": "cv2", "opencv-contrib-python-headless": "cv2", "scikit-image": "skimage",
    "scikit-learn": "sklearn", "beautifulsoup4": "bs4", "protobuf": "google.protobuf", "gitpython": "git",
    "python-dateutil": "dateutil", "pyopengl": "OpenGL", "pytorch-lightning": "pytorch_lightning",
    "pycryptodome": "Crypto", "msgpack-python": "msgpack", "ffmpeg-python": "ffmpeg",
}
#: Requirement lines ComfyUI starts without under the launcher: front-end (served from --front-end-root),
#: workflow templates and embedded docs (imported only when asked for).
NOT_NEEDED_TO_START = ("comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs")
#: The line of ComfyUI's requirements.txt after which nothing is needed to start.
_NON_ESSENTIAL = re.compile(r"#\s*non[\s_-]*essential", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")

_SCRIPT = """
import importlib, importlib.util, json, sys
missing = {}
for name in json.loads(sys.argv[1]):
    try:
        if name == "torch":
            importlib.import_module(name)  # imported for real: a torch that cannot load its libraries is caught too
        elif importlib.util.find_spec(name) is None:
            missing[name] = "not installed"
    except ModuleNotFoundError as exc:
        missing[name] = "not installed" if exc.name == name.split(".")[0] else "ModuleNotFoundError: " + str(exc)
    except Exception as exc:
        missing[name] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:200]
print("WAN22-CHECK " + json.dumps({"missing": missing, "version": sys.version.split()[0]}))
"""


@dataclass(frozen=True)
class Interpreter:
    """The interpreter that runs ComfyUI and why it was chosen."""

    path: str
    why: str  # the flag, ini key or variable that named it, FOUND_IN_FOLDER or RUNNING_PYTEST

    def describe(self) -> str:
        """For the report header: '/x/.venv/bin/python (found in the ComfyUI folder)'."""
        return f"{self.path} ({self.why})"


def _is_windows(platform: str) -> bool:
    return platform.startswith(("win", "cygwin"))


def candidates(comfyui_dir: Path, platform: str | None = None) -> list[Path]:
    """Where a ComfyUI install keeps its interpreter, in the order they are looked at (on this platform by
    default)."""
    if _is_windows(platforms.PLATFORM if platform is None else platform):
        return [comfyui_dir / "venv" / "Scripts" / "python.exe", comfyui_dir / ".venv" / "Scripts" / "python.exe",
                comfyui_dir.parent / "python_embeded" / "python.exe"]
    return [comfyui_dir / "venv" / "bin" / "python", comfyui_dir / ".venv" / "bin" / "python"]


def find(comfyui_dir: Path | None, given: str | None = None, given_by: str = "--wan22-python", *,
         platform: str | None = None, running: str = sys.executable) -> Interpreter:
    """The interpreter to launch ComfyUI with: the one given, the ComfyUI folder's own, or `running`.

    A folder's interpreter is taken when its path exists, even as a broken link (a venv whose base Python was
    removed): the check then says it does not run, rather than quietly falling back to another one. The path
    is kept as found, never resolved: a venv's python is a link whose target knows nothing of the venv.
    """
    if given:
        bare = os.sep not in given and (os.altsep is None or os.altsep not in given)
        found = shutil.which(given) if bare else None  # a command name, as in --wan22-python=python3
        return Interpreter(found or given, given_by)
    if comfyui_dir is not None:
        for path in candidates(comfyui_dir, platform):
            if os.path.lexists(path):
                return Interpreter(str(path), FOUND_IN_FOLDER)
    return Interpreter(running, RUNNING_PYTEST)


def portable_build(comfyui_dir: Path | None, python: str) -> bool:
    """True when ComfyUI is the Windows portable build's (``ComfyUI_windows_portable\\ComfyUI``) run by its own
    ``python_embeded\\python.exe``: the launcher then starts it as the build's run_nvidia_gpu.bat does, with
    ``-s`` and ``--windows-standalone-build``."""
    if comfyui_dir is None or not platforms.windows():
        return False
    embedded = comfyui_dir.parent / "python_embeded" / "python.exe"

    def key(path: str | Path) -> str:
        return os.path.normcase(os.path.abspath(path))

    return os.path.lexists(embedded) and key(embedded) == key(python)


def import_name(distribution: str) -> str:
    """The top-level module a distribution is imported as (Pillow -> PIL, comfy-kitchen -> comfy_kitchen)."""
    key = re.sub(r"[-_.]+", "-", distribution).lower()
    return IMPORT_NAMES.get(key, key.replace("-", "_"))


def required_modules(comfyui_dir: Path | None) -> list[tuple[str, str]]:
    """(distribution, module) for each requirement ComfyUI needs to start, in file order; [] without a
    requirements.txt. Skipped: comments, options (-r, --index-url), URLs and paths, lines with an environment
    marker (they apply on some machines only), everything after '#non essential', and NOT_NEEDED_TO_START."""
    if comfyui_dir is None:
        return []
    try:
        text = (comfyui_dir / "requirements.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if _NON_ESSENTIAL.match(line):
            break
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or ";" in line or "://" in line or line.startswith((".", "/")):
            continue
        match = _NAME.match(line)
        if match is None:
            continue
        name = match.group(0)
        if re.sub(r"[-_.]+", "-", name).lower() in NOT_NEEDED_TO_START:
            continue
        module = import_name(name)
        if all(module != m for _, m in out):
            out.append((name, module))
    return out


@dataclass(frozen=True)
class CheckResult:
    """What the interpreter said: the modules it lacks (module -> why), or why it did not run at all."""

    python: str
    missing: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # it did not run, timed out or printed nothing we understand
    version: str | None = None

    @property
    def ok(self) -> bool:
        """True when it ran and lacks nothing."""
        return self.error is None and not self.missing


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def check(python: str, modules: Sequence[str], cwd: Path | None = None, *, timeout: float = 180.0,
          run: Runner = subprocess.run) -> CheckResult:
    """Run `python` with the check script (from `cwd`, where ComfyUI runs from) and read what it lacks."""
    try:
        done = run([python, "-c", _SCRIPT, json.dumps(list(modules))], cwd=str(cwd) if cwd else None,
                   capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return CheckResult(python, error=f"it did not finish importing them within {timeout:g} s")
    except OSError as exc:
        return CheckResult(python, error=f"it cannot be run ({exc.strerror or exc})")
    for line in reversed((done.stdout or "").splitlines()):
        if line.startswith("WAN22-CHECK "):
            try:
                data = json.loads(line[len("WAN22-CHECK "):])
                return CheckResult(python, dict(data["missing"]), None, data.get("version"))
            except (ValueError, KeyError, TypeError):
                break
    said = (done.stderr or done.stdout or "").strip().splitlines()
    return CheckResult(python, error=f"it exited with code {done.returncode}" + (f": {said[-1][:200]}" if said
                                                                                else ""))


def problem(result: CheckResult, interpreter: Interpreter, comfyui_dir: Path | None,
            wanted: Sequence[tuple[str, str]], option: str = "--wan22-python (ini wan22_python, env WAN22_PYTHON)",
            what: str = "ComfyUI's interpreter") -> str | None:
    """The one error message for a failed check (None when it passed): the interpreter, why it was chosen,
    what it lacks, and the two fixes: name the right interpreter, or install the requirements into this one."""
    if result.ok:
        return None
    head = f"{what} {interpreter.describe()}"
    names = dict((m, d) for d, m in wanted)
    if result.error is not None:
        lines = [f"{head} cannot check ComfyUI's requirements: {result.error}."]
    else:
        lacks = ", ".join(m if names.get(m, m).lower().replace("-", "_") == m.lower() else f"{m} ({names[m]})"
                          for m in result.missing)
        broken = [f"  {m}: {why}" for m, why in result.missing.items() if why != "not installed"]
        lines = [f"{head} cannot start ComfyUI: it lacks {lacks}.", *broken[:3]]
    fix = f"Fix: point {option} at the Python of your ComfyUI install"
    if interpreter.why != FOUND_IN_FOLDER and comfyui_dir is not None:
        fix += " (a venv/ or .venv/ inside the ComfyUI folder is found without it)"
    if comfyui_dir is not None and (comfyui_dir / "requirements.txt").is_file():
        install = [interpreter.path, "-m", "pip", "install", "-r", str(comfyui_dir / "requirements.txt")]
        lines += [fix + ",", f"or install them there: {platforms.command_text(install)}"]
    else:
        lines.append(fix + ".")
    return "\n".join(lines)

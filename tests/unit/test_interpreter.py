"""Finding ComfyUI's interpreter in its folder, and checking it once before any launch."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.interpreter import (
    FOUND_IN_FOLDER,
    RUNNING_PYTEST,
    CheckResult,
    Interpreter,
    check,
    find,
    import_name,
    problem,
    required_modules,
)
from tests.posix import posix_only

# ComfyUI 0.8.0's requirements.txt, as it ships
REQUIREMENTS_080 = """comfyui-frontend-package==1.35.9
comfyui-workflow-templates==0.7.67
comfyui-embedded-docs==0.3.1
torch
torchsde
torchvision
torchaudio
numpy>=1.25.0
einops
transformers>=4.50.3
tokenizers>=0.13.3
sentencepiece
safetensors>=0.4.2
aiohttp>=3.11.8
yarl>=1.18.0
pyyaml
Pillow
scipy
tqdm
psutil
alembic
SQLAlchemy
av>=14.2.0
comfy-kitchen>=0.2.3

#non essential dependencies:
kornia>=0.7.1
spandrel
pydantic~=2.0
pydantic-settings~=2.0"""


def _exe(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_python(path: Path, site: Path | None = None) -> Path:
    """A shell script that runs this interpreter, with `site` first on its path (fake modules live there)."""
    env = f'PYTHONPATH="{site}" ' if site else ""
    return _exe(path, f'#!/bin/sh\n{env}exec "{sys.executable}" "$@"\n')


def comfy(tmp_path: Path, requirements: str | None = REQUIREMENTS_080) -> Path:
    folder = tmp_path / "ComfyUI"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("")
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


# --------------------------------------------------------------------------- finding it

def test_the_interpreter_given_wins_over_the_folder(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    _exe(folder / ".venv" / "bin" / "python")
    assert find(folder, "/opt/conda/bin/python", "--wan22-python") == Interpreter("/opt/conda/bin/python",
                                                                                 "--wan22-python")
    assert find(folder, "/x/python", "ini wan22_python").describe() == "/x/python (ini wan22_python)"


@pytest.mark.parametrize("venv", ["venv", ".venv"])
def test_a_venv_inside_the_comfyui_folder_is_found(tmp_path: Path, venv: str) -> None:
    folder = comfy(tmp_path)
    python = _exe(folder / venv / "bin" / "python")
    found = find(folder, None, platform="linux", running="/usr/bin/python3")
    assert found == Interpreter(str(python), FOUND_IN_FOLDER)
    assert found.describe() == f"{python} (found in the ComfyUI folder)"


def test_venv_is_looked_at_before_dot_venv(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    _exe(folder / ".venv" / "bin" / "python")
    first = _exe(folder / "venv" / "bin" / "python")
    assert find(folder, None, platform="darwin").path == str(first)


@posix_only("a symlink stands in for the venv's python")
def test_a_venv_python_is_kept_as_a_link_not_resolved(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    (folder / ".venv" / "bin").mkdir(parents=True)
    link = folder / ".venv" / "bin" / "python"
    link.symlink_to(sys.executable)
    assert find(folder, None, platform="linux").path == str(link)  # its target knows nothing of the venv


@posix_only("a dangling symlink stands in for a broken venv")
def test_a_broken_venv_is_still_chosen_so_the_check_names_it(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    (folder / "venv" / "bin").mkdir(parents=True)
    (folder / "venv" / "bin" / "python").symlink_to(tmp_path / "removed-python")
    found = find(folder, None, platform="linux", running=sys.executable)
    assert found.why == FOUND_IN_FOLDER
    result = check(found.path, ["json"], folder)
    assert "cannot be run" in (result.error or "")


def test_without_an_install_it_is_the_interpreter_running_pytest(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    assert find(folder, None, platform="linux", running="/srv/py") == Interpreter("/srv/py", RUNNING_PYTEST)
    assert find(None, None, running="/srv/py").describe() == "/srv/py (the interpreter running pytest)"


def test_windows_looks_in_scripts_and_beside_the_portable_build(tmp_path: Path) -> None:
    portable = tmp_path / "ComfyUI_windows_portable"
    folder = comfy(portable)
    embedded = _exe(portable / "python_embeded" / "python.exe")
    assert find(folder, None, platform="win32").path == str(embedded)
    assert find(folder, None, platform="linux", running="/srv/py").path == "/srv/py"  # not on POSIX
    _exe(folder / "venv" / "bin" / "python")  # a POSIX layout is not a Windows one
    assert find(folder, None, platform="win32").path == str(embedded)
    venv = _exe(folder / ".venv" / "Scripts" / "python.exe")
    assert find(folder, None, platform="win32") == Interpreter(str(venv), FOUND_IN_FOLDER)


# --------------------------------------------------------------------------- what ComfyUI needs

def test_requirements_map_to_import_names_up_to_the_non_essential_line(tmp_path: Path) -> None:
    modules = [m for _, m in required_modules(comfy(tmp_path))]
    assert modules == ["torch", "torchsde", "torchvision", "torchaudio", "numpy", "einops", "transformers",
                       "tokenizers", "sentencepiece", "safetensors", "aiohttp", "yarl", "yaml", "PIL", "scipy",
                       "tqdm", "psutil", "alembic", "sqlalchemy", "av", "comfy_kitchen"]
    # the front-end is served from the launcher's own folder, templates and docs load on demand
    assert not any(m.startswith("comfyui_") for m in modules)
    assert not {"kornia", "pydantic"} & set(modules)  # non essential


def test_odd_requirement_lines_are_skipped_not_guessed(tmp_path: Path) -> None:
    folder = comfy(tmp_path, "# a comment\n-r other.txt\n--extra-index-url https://x\n"
                             "git+https://github.com/a/b\n./local\nwindows-only; sys_platform == 'win32'\n"
                             "opencv-python-headless>=4  # inline comment\nPyYAML\npyyaml\nscikit_image\n")
    assert required_modules(folder) == [("opencv-python-headless", "cv2"), ("PyYAML", "yaml"),
                                        ("scikit_image", "skimage")]
    assert required_modules(comfy(tmp_path / "none", None)) == []
    assert required_modules(None) == []


@pytest.mark.parametrize(("distribution", "module"), [
    ("Pillow", "PIL"), ("pyyaml", "yaml"), ("SQLAlchemy", "sqlalchemy"), ("av", "av"),
    ("comfy-kitchen", "comfy_kitchen"), ("comfy.kitchen", "comfy_kitchen"), ("protobuf", "google.protobuf"),
])
def test_import_names(distribution: str, module: str) -> None:
    assert import_name(distribution) == module


# --------------------------------------------------------------------------- checking it

def test_check_reports_what_is_missing(tmp_path: Path) -> None:
    result = check(sys.executable, ["json", "wan22_no_such_module", "yaml"], tmp_path)
    assert result.error is None
    assert result.missing == {"wan22_no_such_module": "not installed"}
    assert not result.ok
    assert check(sys.executable, ["json"], tmp_path).ok


@posix_only("a shell script stands in for the interpreter")
def test_torch_is_imported_for_real_so_a_broken_one_is_caught(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("raise OSError('libcudart.so.12: cannot open shared object file')")
    python = fake_python(tmp_path / "bin" / "python", site)
    result = check(str(python), ["torch", "json"], tmp_path)
    assert result.missing == {"torch": "OSError: libcudart.so.12: cannot open shared object file"}
    (site / "torch" / "__init__.py").write_text("")
    assert check(str(python), ["torch", "json"], tmp_path).ok


def test_check_runs_from_the_comfyui_folder(tmp_path: Path) -> None:
    folder = comfy(tmp_path, "helper_beside_main\n")
    assert not check(sys.executable, ["helper_beside_main"], folder).ok
    (folder / "helper_beside_main.py").write_text("")  # as main.py would import it: from its own folder
    assert check(sys.executable, ["helper_beside_main"], folder).ok


@posix_only("a shell script stands in for the interpreter")
def test_an_interpreter_that_does_not_run_says_so(tmp_path: Path) -> None:
    assert "cannot be run" in (check(str(tmp_path / "nope"), ["json"]).error or "")
    broken = _exe(tmp_path / "python", "#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n")
    assert check(str(broken), ["json"]).error == ("it exited with code 127: error while loading shared "
                                                  "libraries")

    def slow(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    assert check("python", ["torch"], timeout=5, run=slow).error == ("it did not finish importing them within "
                                                                      "5 s")


def test_the_message_names_the_interpreter_what_it_lacks_and_both_fixes(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    wanted = required_modules(folder)
    interpreter = Interpreter("/usr/bin/python3", RUNNING_PYTEST)
    result = CheckResult("/usr/bin/python3", {"torch": "not installed", "yaml": "not installed",
                                              "tqdm": "not installed"})
    text = problem(result, interpreter, folder, wanted)
    assert text is not None
    lines = text.splitlines()
    assert len(lines) < 20
    assert lines[0] == ("ComfyUI's interpreter /usr/bin/python3 (the interpreter running pytest) cannot start "
                        "ComfyUI: it lacks torch, yaml (pyyaml), tqdm.")
    assert "--wan22-python (ini wan22_python, env WAN22_PYTHON)" in lines[1]
    assert "a venv/ or .venv/ inside the ComfyUI folder is found without it" in lines[1]
    assert lines[2] == f"or install them there: /usr/bin/python3 -m pip install -r {folder / 'requirements.txt'}"
    assert problem(CheckResult("/usr/bin/python3"), interpreter, folder, wanted) is None


def test_the_message_for_side_a_names_its_own_flag(tmp_path: Path) -> None:
    folder = comfy(tmp_path)
    venv = Interpreter(str(folder / ".venv/bin/python"), FOUND_IN_FOLDER)
    text = problem(CheckResult(venv.path, {"torch": "OSError: libcudart.so.12"}), venv, folder,
                   required_modules(folder), option="--wan22-ab-python (ini wan22_ab_python)",
                   what="A/B side A (current): ComfyUI's interpreter") or ""
    assert text.startswith(f"A/B side A (current): ComfyUI's interpreter {venv.path} (found in the ComfyUI folder)")
    assert "  torch: OSError: libcudart.so.12" in text.splitlines()
    assert "--wan22-ab-python (ini wan22_ab_python)" in text
    assert "found without it" not in text  # it was found there


def test_the_message_when_it_does_not_run(tmp_path: Path) -> None:
    folder = comfy(tmp_path, None)
    interpreter = Interpreter("/x/python", "WAN22_PYTHON")
    text = problem(CheckResult("/x/python", error="it cannot be run (No such file or directory)"), interpreter,
                   folder, []) or ""
    assert text.splitlines()[0] == ("ComfyUI's interpreter /x/python (WAN22_PYTHON) cannot check ComfyUI's "
                                    "requirements: it cannot be run (No such file or directory).")
    assert "pip install" not in text  # no requirements.txt to install from


def test_the_plain_modules_do_not_import_pytest() -> None:
    code = "import sys, pytest_wan22.interpreter, pytest_wan22.runs; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "False"


@posix_only("a shell script stands in for the interpreter")
def test_a_missing_torch_is_just_missing_but_a_missing_dependency_of_it_is_named(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    python = fake_python(tmp_path / "bin" / "python", site)
    (site / "torch" / "__init__.py").write_text("import typing_extensions_wan22_missing\n")
    assert check(str(python), ["torch"]).missing == {
        "torch": "ModuleNotFoundError: No module named 'typing_extensions_wan22_missing'"}
    (site / "torch" / "__init__.py").unlink()
    (site / "torch").rmdir()
    assert check(str(python), ["torch"]).missing == {"torch": "not installed"}


@posix_only("an executable without an extension is found on PATH")
def test_a_command_name_is_looked_up_on_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "bin" / "python3"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(exe.parent))
    assert find(None, "python3").path == str(exe)
    assert find(None, "nosuchpython").path == "nosuchpython"  # left as given: the settings check names it

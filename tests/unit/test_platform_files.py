"""Paths, command lines and files with no POSIX-only assumption: Windows' argument splitting and quoting, the
extra_model_paths.yaml of a folder with odd characters, the lock file of the synthetic models, baseline writes
without os.fchmod, and a rename over a file another process holds. Windows branches are taken on Linux by forcing
the platform switch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pytest_wan22 import platforms
from pytest_wan22.launcher import ServerSpec
from pytest_wan22.settings import _split

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms, "PLATFORM", "win32")


@pytest.mark.parametrize(("text", "args"), [
    (r"--output-directory C:\ComfyUI\output --lowvram", ["--output-directory", r"C:\ComfyUI\output", "--lowvram"]),
    (r'--base-directory "D:\AI tools\models" --x', ["--base-directory", r"D:\AI tools\models", "--x"]),
    (r'a\"b', ['a"b']),
    (r'a\\"b c"', ["a\\b c"]),
    (r'"a""b"', ['a"b']),
    ('--x ""', ["--x", ""]),
    ("  \t--a\t --b  ", ["--a", "--b"]),
    (r"\\server\share\dir\ end", ["\\\\server\\share\\dir\\", "end"]),
])
def test_windows_splits_arguments_as_its_c_runtime_does(text: str, args: list[str], on_windows: None) -> None:
    assert platforms.split_args(text) == args
    assert _split(text, "--wan22-server-args") == tuple(args)


def test_posix_splits_arguments_as_its_shell_does() -> None:
    assert platforms.split_args(r"--output-directory C:\out 'a b'") == ["--output-directory", "C:out", "a b"]


def test_a_command_line_is_quoted_as_the_platform_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [r"C:\AI tools\python_embeded\python.exe", "-s", r"C:\AI tools\ComfyUI\main.py", "--port", "8188"]
    monkeypatch.setattr(platforms, "PLATFORM", "win32")
    text = platforms.command_text(argv)
    assert text == r'"C:\AI tools\python_embeded\python.exe" -s "C:\AI tools\ComfyUI\main.py" --port 8188'
    assert platforms.split_args(text) == argv  # what is logged splits back into the same arguments
    monkeypatch.setattr(platforms, "PLATFORM", "linux")
    assert platforms.command_text(["/opt/my comfy/python", "a"]) == "'/opt/my comfy/python' a"


def test_extra_model_paths_reads_back_a_folder_with_odd_characters(tmp_path: Path) -> None:
    work = tmp_path / "AI tools # 2: runs" / "back\\slash"
    packs = tmp_path / "node packs: C"
    spec = ServerSpec(comfyui_dir=tmp_path, work_dir=work, custom_nodes=(packs,))
    spec.prepare()
    data = yaml.safe_load((work / "extra_model_paths.yaml").read_text(encoding="utf-8"))
    assert data["wan22"] == {"base_path": str(work), "custom_nodes": "custom_nodes"}
    assert data["wan22_packs_0"] == {"custom_nodes": str(packs)}
    assert yaml.safe_load('base_path: "C:\\\\AI tools\\\\work"') == {"base_path": r"C:\AI tools\work"}


_HOLD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from pytest_wan22.synth import _lock
with _lock(Path({path!r})):
    print("held", flush=True)
    time.sleep(1.5)
"""


def test_the_synthetic_models_lock_keeps_a_second_process_waiting(tmp_path: Path) -> None:
    from pytest_wan22.synth import _lock

    path = tmp_path / "models" / ".wan22-synth-tiny.lock"
    with subprocess.Popen([sys.executable, "-c", _HOLD.format(repo=str(REPO), path=str(path))],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        with _lock(path):
            waited = time.monotonic() - began
        holder.wait(timeout=10)
    assert waited > 0.5


def test_a_baseline_is_written_where_os_has_no_fchmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_wan22.baselines import Baseline, BaselineStore

    monkeypatch.delattr(os, "fchmod", raising=False)  # as on Windows before Python 3.13
    path = BaselineStore(tmp_path).save(Baseline("rtx4090", "w", {}))
    assert path.is_file()
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o644


def test_a_rename_over_a_held_file_is_retried_on_windows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    src, dst = tmp_path / "new", tmp_path / "old"
    src.write_text("new")
    dst.write_text("old")
    refusals = [PermissionError(13, "The process cannot access the file")] * 2
    real = os.replace

    def replace(a: Path, b: Path) -> None:
        if refusals:
            raise refusals.pop()
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        platforms.replace_file(src, dst, sleep=lambda s: None)  # Linux: no retry, the refusal is real
    monkeypatch.setattr(platforms, "PLATFORM", "win32")
    waits: list[float] = []
    platforms.replace_file(src, dst, sleep=waits.append)
    assert dst.read_text() == "new"
    assert waits == [0.05]  # the first refusal was used up above; one more, then it went through
    src.write_text("again")
    refusals[:] = [PermissionError(13, "held")] * 10
    with pytest.raises(PermissionError):
        platforms.replace_file(src, dst, attempts=3, sleep=waits.append)
    assert waits == [0.05, 0.05, 0.1]

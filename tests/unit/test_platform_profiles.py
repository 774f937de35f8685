"""Launch profiles that fit the platform: a tier row's per-platform arguments and environment, the settings a
platform's PyTorch does not support left out, and the Windows portable build found and started as it starts
itself. The Windows branches are taken on Linux by forcing the platform switch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_wan22 import platforms
from pytest_wan22.errors import ConfigError
from pytest_wan22.interpreter import FOUND_IN_FOLDER, CheckResult, Interpreter, find, portable_build, problem
from pytest_wan22.launcher import STANDALONE_FLAG, ServerSpec
from pytest_wan22.tiers import load_tiers, make_profile, platform_settings

TIERS = load_tiers()
NO_EXPANDABLE = ("PYTORCH_CUDA_ALLOC_CONF option expandable_segments:True is not passed on windows: PyTorch on "
                 "Windows does not support expandable segments")


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms, "PLATFORM", "win32")


@pytest.mark.parametrize("name", ["rtx5090", "rtx4090"])
def test_the_shipped_rows_allocator_setting_is_left_out_on_windows_and_said(name: str, on_windows: None) -> None:
    profile = make_profile(TIERS[name])
    assert "PYTORCH_CUDA_ALLOC_CONF" not in profile.env
    assert profile.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert profile.args == TIERS[name].args
    assert profile.notes == (NO_EXPANDABLE,)


@pytest.mark.parametrize("name", ["rtx5090", "rtx4090"])
def test_on_linux_the_shipped_rows_pass_everything(name: str) -> None:
    profile = make_profile(TIERS[name], platform="linux")
    assert profile.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert profile.notes == ()
    assert platform_settings(TIERS[name], "linux")[2] == []


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiers.toml"
    path.write_text(text, encoding="utf-8")
    return path


ROW = """
[tiers.ws]
match = ["RTX 6000"]
args = ["--normalvram", "--reserve-vram", "1.0", "--use-pytorch-cross-attention"]
env = { PYTORCH_CUDA_ALLOC_CONF = "expandable_segments:True,garbage_collection_threshold:0.8", A = "1" }

[tiers.ws.windows]
args = ["--reserve-vram", "1.5", "--use-sage-attention"]
env = { B = "2", PYTORCH_ALLOC_CONF = "expandable_segments:True" }

[tiers.ws.linux]
env = { C = "3" }
"""


def test_a_rows_platform_table_adds_and_replaces_settings_there_only(tmp_path: Path) -> None:
    tier = load_tiers(_table(tmp_path, ROW))["ws"]
    args, env, notes = platform_settings(tier, "windows")
    assert args == ("--normalvram", "--reserve-vram", "1.5", "--use-sage-attention")
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "garbage_collection_threshold:0.8", "A": "1", "B": "2"}
    assert notes == [
        "the ws tier's windows settings apply: arguments --reserve-vram 1.5 --use-sage-attention; environment B=2 "
        "PYTORCH_ALLOC_CONF=expandable_segments:True",
        "PYTORCH_CUDA_ALLOC_CONF option expandable_segments:True is not passed on windows: PyTorch on Windows does "
        "not support expandable segments",
        "PYTORCH_ALLOC_CONF option expandable_segments:True is not passed on windows: PyTorch on Windows does not "
        "support expandable segments"]
    args, env, notes = platform_settings(tier, "linux")
    assert args == tier.args
    assert env == {**tier.env, "C": "3"}
    assert notes == ["the ws tier's linux settings apply: environment C=3"]
    assert platform_settings(tier, "macos")[:2] == (tier.args, dict(tier.env))


def test_a_platform_table_is_checked_like_the_row(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key tiers\.ws\.windows\.argz; known keys there: args, env"):
        load_tiers(_table(tmp_path, '[tiers.ws]\nmatch = ["x"]\n[tiers.ws.windows]\nargz = ["--x"]\n'))
    with pytest.raises(ConfigError, match=r'tiers\.ws\.windows\.args = "--x" is not a list'):
        load_tiers(_table(tmp_path, '[tiers.ws]\nmatch = ["x"]\n[tiers.ws.windows]\nargs = "--x"\n'))
    with pytest.raises(ConfigError, match=r"unknown key tiers\.ws\.macos"):
        load_tiers(_table(tmp_path, '[tiers.ws]\nmatch = ["x"]\n[tiers.ws.macos]\nargs = ["--x"]\n'))


# --------------------------------------------------------------------------- the portable build

def _portable(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "AI tools" / "ComfyUI_windows_portable"  # a space in the install folder
    comfyui = root / "ComfyUI"
    comfyui.mkdir(parents=True)
    (comfyui / "main.py").write_text("")
    embedded = root / "python_embeded" / "python.exe"
    embedded.parent.mkdir()
    embedded.write_text("")
    return comfyui, embedded


def test_the_portable_builds_interpreter_is_found_on_windows(tmp_path: Path, on_windows: None) -> None:
    comfyui, embedded = _portable(tmp_path)
    assert find(comfyui, None) == Interpreter(str(embedded), FOUND_IN_FOLDER)
    assert portable_build(comfyui, str(embedded))


def test_the_portable_build_starts_as_its_own_batch_file_starts_it(tmp_path: Path, on_windows: None) -> None:
    comfyui, embedded = _portable(tmp_path)
    spec = ServerSpec(comfyui_dir=comfyui, work_dir=tmp_path / "work", python=str(embedded), install_probe=False)
    argv = spec.command(8188)
    assert argv[:4] == [str(embedded), "-s", "-u", str(comfyui / "main.py")]
    assert argv.count(STANDALONE_FLAG) == 1
    given = ServerSpec(comfyui_dir=comfyui, work_dir=tmp_path / "work", python=str(embedded), install_probe=False,
                       args=(STANDALONE_FLAG, "--lowvram"))
    assert given.command(8188).count(STANDALONE_FLAG) == 1  # named by the user: not twice
    other = ServerSpec(comfyui_dir=comfyui, work_dir=tmp_path / "work", python=sys.executable, install_probe=False)
    assert not portable_build(comfyui, sys.executable)  # another interpreter: not the portable build's start
    assert "-s" not in other.command(8188)
    assert STANDALONE_FLAG not in other.command(8188)


def test_a_portable_layout_on_linux_is_started_as_any_other(tmp_path: Path) -> None:
    comfyui, embedded = _portable(tmp_path)
    assert not portable_build(comfyui, str(embedded))
    assert STANDALONE_FLAG not in ServerSpec(comfyui_dir=comfyui, work_dir=tmp_path, python=str(embedded)).command(1)


def test_the_install_hint_quotes_a_folder_with_a_space_as_its_platform_does(tmp_path: Path, on_windows: None
                                                                            ) -> None:
    comfyui, embedded = _portable(tmp_path)
    (comfyui / "requirements.txt").write_text("torch\n")
    text = problem(CheckResult(str(embedded), {"torch": "not installed"}), Interpreter(str(embedded), FOUND_IN_FOLDER),
                   comfyui, [("torch", "torch")])
    assert text is not None
    assert f'or install them there: "{embedded}" -m pip install -r "{comfyui / "requirements.txt"}"' in text

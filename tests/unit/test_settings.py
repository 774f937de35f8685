from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.compare import METRICS
from pytest_wan22.errors import ConfigError
from pytest_wan22.options import OPTIONS, Option
from pytest_wan22.settings import resolve


def _resolve(tmp_path: Path, cli: dict[str, Any] | None = None, ini: dict[str, Any] | None = None,
             env: dict[str, str] | None = None):
    cli, ini = cli or {}, ini or {}
    return resolve(tmp_path, lambda o: cli.get(o.name), lambda o: ini.get(o.name, ""), env or {})


def test_defaults(tmp_path: Path) -> None:
    s = _resolve(tmp_path)
    assert s.python == sys.executable
    assert s.port == 0
    assert s.rounds == 10
    assert s.min_rounds == 3
    assert s.fewest_rounds == 3
    assert s.warmup_rounds == 1
    assert s.ab is None
    assert s.missing == "fail"
    assert s.workflows_dir == tmp_path / "workflows"
    assert set(s.tolerances) == set(METRICS)
    assert not s.attach


def test_cli_beats_env_beats_ini(tmp_path: Path) -> None:
    assert _resolve(tmp_path, cli={"rounds": 5}, env={"WAN22_ROUNDS": "4"}, ini={"rounds": "2"}).rounds == 5
    assert _resolve(tmp_path, env={"WAN22_ROUNDS": "4"}, ini={"rounds": "2"}).rounds == 4
    assert _resolve(tmp_path, ini={"rounds": "2"}).rounds == 2


def test_zero_is_a_value_not_unset(tmp_path: Path) -> None:
    assert _resolve(tmp_path, cli={"warmup_rounds": 0}, ini={"warmup_rounds": "2"}).warmup_rounds == 0


def test_tolerances_overlay_defaults(tmp_path: Path) -> None:
    s = _resolve(tmp_path, ini={"tolerance": ["time:20%"]})
    assert s.tolerances["wall"].ratio == pytest.approx(0.2)  # 'time' is the old name of wall
    assert s.tolerances["vram"].absolute == pytest.approx(1024)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"env": {"WAN22_ROUNDS": "0"}}, "WAN22_ROUNDS"),
        ({"ini": {"port": "99999"}}, "ini wan22_port"),
        ({"ini": {"tolerance": ["speed:5%"]}}, "METRIC:LIMIT"),
        ({"cli": {"tier": "rtx9090"}}, "unknown tier 'rtx9090'"),
        ({"cli": {"emulate_tier": "cpu"}}, "cannot be emulated"),
        ({"cli": {"comfyui_dir": "/nonexistent/ComfyUI"}}, "does not exist"),
        ({"cli": {"python": "/nonexistent/python"}}, "--wan22-python"),
        ({"cli": {"url": "localhost:8188"}}, "http://"),
        ({"cli": {"update_baselines": True, "emulate_tier": "rtx4090"}}, "emulated timings"),
        ({"ini": {"missing": "maybe"}}, "fail, skip"),
        ({"cli": {"ab_python": "/nonexistent/python"}}, "--wan22-ab-python"),
        ({"cli": {"ab_comfyui_dir": "/nonexistent/ComfyUI"}}, "--wan22-ab-comfyui-dir"),
        ({"cli": {"ab_args": "--lowvram"}, "env": {"WAN22_SERVER_ARGS": "--lowvram"}}, "side A"),
        ({"cli": {"ab_args": "'unclosed"}}, "--wan22-ab-args"),
        ({"cli": {"ab_args": "--lowvram", "url": "http://127.0.0.1:8188"}}, "drop --wan22-url"),
        ({"cli": {"ab_args": "--lowvram", "update_baselines": True}}, "neither reads nor writes baselines"),
        ({"cli": {"ab_args": "--lowvram", "emulate_tier": "rtx4090"}}, "emulated tier"),
        ({"ini": {"min_rounds": "0"}}, "ini wan22_min_rounds"),
    ],
)
def test_bad_input_names_cause_and_fix(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(tmp_path, **kwargs)
    assert needle in str(info.value)


def test_rounds_bounds(tmp_path: Path) -> None:
    assert _resolve(tmp_path, ini={"rounds": "2"}).fewest_rounds == 2  # the minimum never exceeds the maximum
    assert _resolve(tmp_path, ini={"rounds": "8", "min_rounds": "4"}).fewest_rounds == 4
    assert _resolve(tmp_path, cli={"update_baselines": True}, ini={"rounds": "8"}).fewest_rounds == 8


def test_ab_side_defaults_to_side_b_except_what_is_named(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "main.py").write_text("")
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "main.py").write_text("")
    s = _resolve(tmp_path, cli={"ab_comfyui_dir": "A", "comfyui_dir": "B", "server_args": "--fast"})
    assert s.ab is not None
    assert (s.ab.comfyui_dir, s.ab.python, s.ab.server_args) == (tmp_path / "A", sys.executable, ("--fast",))
    assert s.ab.describe(s.comfyui_dir, s.python, s.server_args) == [f"ComfyUI {tmp_path / 'A'} -> {tmp_path / 'B'}"]
    s = _resolve(tmp_path, cli={"ab_args": "--use-sage-attention", "comfyui_dir": "B"})
    assert s.ab is not None
    assert s.ab.server_args == ("--use-sage-attention",)
    assert s.ab.describe(s.comfyui_dir, s.python, s.server_args) == [
        "launch args --use-sage-attention -> (tier only)"]


def test_comfyui_dir_without_main_py(tmp_path: Path) -> None:
    (tmp_path / "ComfyUI").mkdir()
    with pytest.raises(ConfigError, match=r"has no main\.py.*--wan22-comfyui-dir"):
        _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI"})


def test_every_option_has_one_namespace() -> None:
    for opt in OPTIONS:
        assert isinstance(opt, Option)
        assert opt.cli.startswith("--wan22-")
        assert opt.dest.startswith("wan22_")
        assert opt.env.startswith("WAN22_")
        assert opt.help.endswith(".")


@pytest.mark.parametrize(("kwargs", "first"), [
    ({"cli": {"min_rounds": 5}, "ini": {"rounds": "3"}}, "--wan22-min-rounds = 5 is above ini wan22_rounds = 3"),
    ({"ini": {"min_rounds": "12"}}, "ini wan22_min_rounds = 12 is above --wan22-rounds (default 10)"),
    ({"env": {"WAN22_MIN_ROUNDS": "4", "WAN22_ROUNDS": "2"}}, "WAN22_MIN_ROUNDS = 4 is above WAN22_ROUNDS = 2"),
])
def test_min_rounds_above_rounds_is_refused_naming_both(tmp_path: Path, kwargs: dict[str, Any], first: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(tmp_path, **kwargs)
    assert str(info.value).startswith(first + ": the fewest timed rounds cannot exceed the most; lower "
                                      "--wan22-min-rounds (ini wan22_min_rounds, env WAN22_MIN_ROUNDS) or raise "
                                      "--wan22-rounds (ini wan22_rounds, env WAN22_ROUNDS)")
    assert _resolve(tmp_path, ini={"rounds": "3", "min_rounds": "3"}).fewest_rounds == 3  # equal is fine


@pytest.mark.parametrize(("text", "needle"), [
    ("step:2", "tolerance 'step:2': 2 what: 2% or 2ms? give the unit"),
    ("wall:10%+0.5", "0.5 what: 0.5% or 0.5ms?"),
    ("vram:512", "512 what: 512% or 512MiB?"),
])
def test_a_tolerance_without_a_unit_asks_which(tmp_path: Path, text: str, needle: str) -> None:
    from pytest_wan22.compare import parse_tolerance

    with pytest.raises(ValueError, match="what") as info:
        parse_tolerance(text)
    assert needle in str(info.value)
    with pytest.raises(ConfigError) as config:
        _resolve(tmp_path, ini={"tolerance": [text]})
    assert needle in str(config.value)
    assert "--wan22-tolerance (ini wan22_tolerance, env WAN22_TOLERANCE)" in str(config.value)


def _venv(folder: Path, venv: str = ".venv") -> Path:
    (folder / "main.py").parent.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text("")
    python = folder / venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


def test_the_interpreter_is_found_in_the_comfyui_folder(tmp_path: Path) -> None:
    python = _venv(tmp_path / "ComfyUI")
    s = _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI"})
    assert (s.python, s.python_why) == (str(python), "found in the ComfyUI folder")
    s = _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI"}, env={"WAN22_PYTHON": sys.executable})
    assert (s.python, s.python_why) == (sys.executable, "WAN22_PYTHON")
    s = _resolve(tmp_path, cli={"python": sys.executable}, ini={"comfyui_dir": "ComfyUI"})
    assert s.python_why == "--wan22-python"


def test_side_a_is_found_in_its_own_folder_else_it_is_side_bs(tmp_path: Path) -> None:
    b = _venv(tmp_path / "B")
    a = _venv(tmp_path / "A", "venv")
    s = _resolve(tmp_path, cli={"ab_comfyui_dir": "A", "comfyui_dir": "B"})
    assert s.ab is not None
    assert (s.python, s.ab.python, s.ab.python_why) == (str(b), str(a), "found in the ComfyUI folder")
    s = _resolve(tmp_path, cli={"ab_args": "--fast", "comfyui_dir": "B"})
    assert s.ab is not None
    assert (s.ab.python, s.ab.python_why) == (str(b), "side B's: found in the ComfyUI folder")


def test_check_before_start(tmp_path: Path) -> None:
    import socket

    from pytest_wan22.interpreter import CheckResult
    from pytest_wan22.settings import check_before_start

    folder = tmp_path / "ComfyUI"
    python = _venv(folder)
    (folder / "requirements.txt").write_text("torch\nPillow\n")
    asked: list[tuple[str, list[str], Path | None]] = []

    def lacks_pil(python: str, modules: Any, cwd: Path | None) -> CheckResult:
        asked.append((python, list(modules), cwd))
        return CheckResult(python, {"PIL": "not installed"})

    s = _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI"})
    with pytest.raises(ConfigError, match=r"lacks PIL \(Pillow\)"):
        check_before_start(s, lacks_pil)
    assert asked == [(str(python), ["torch", "PIL"], folder)]
    attached = _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI", "url": "http://127.0.0.1:9"})
    check_before_start(attached, lacks_pil)  # attach mode launches nothing: no interpreter to check
    assert len(asked) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = _resolve(tmp_path, ini={"comfyui_dir": "ComfyUI", "port": str(port)})
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_before_start(s, lacks_pil)
    (tmp_path / "file").write_text("")
    s = _resolve(tmp_path, ini={"report": "file/report"})
    with pytest.raises(ConfigError, match=r"--wan22-report .*file/report: cannot write there"):
        check_before_start(s, lacks_pil)

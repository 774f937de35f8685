from __future__ import annotations

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
    assert s.rounds == 3
    assert s.warmup_rounds == 1
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
    ],
)
def test_bad_input_names_cause_and_fix(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(tmp_path, **kwargs)
    assert needle in str(info.value)


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

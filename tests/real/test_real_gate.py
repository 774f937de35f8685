"""The gate on a real ComfyUI (CPU, tiny synthetic models): an unchanged rerun passes, a copy of the same ComfyUI
with a node pack that sleeps in every sampler step fails as regressed, and A/B sessions judge one install against
the other. Set WAN22_COMFYUI_DIR and WAN22_PYTHON."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.real.conftest import COMFYUI, real_project
from tests.real.test_real_comfyui import HEADER

# A node pack that makes every sampler step slower, as a regression in torch, a driver or a node pack would.
SLOW_STEPS = '''
import time

import comfy.samplers

_inner = comfy.samplers.sampling_function


def _slow(*args, **kwargs):
    time.sleep({seconds})
    return _inner(*args, **kwargs)


comfy.samplers.sampling_function = _slow
NODE_CLASS_MAPPINGS = {{}}
'''

TEST = HEADER + textwrap.dedent("""
    def test_i2v(wan22_run):
        wan22_run(BASE)
""")


# A shared CPU's rounds wander by tens of percent, so the bands here are wide: what is checked is the plumbing
# (a slowdown of a few hundred percent fails with its interval, an unchanged install passes), not the precision
# a GPU gives.
CPU_TOLERANCES = ("step:100%", "sampling:100%", *(f"{m}:100%+0.5s" for m in (
    "wall", "load", "text", "encode", "decode", "interpolation", "save", "compile")))
SLOW_STEP_S = 0.5


def copy_of_comfyui(dest: Path, slow_step_s: float | None = None) -> Path:
    """A copy of the ComfyUI under test; with a delay, one whose sampler steps are that much slower."""
    assert COMFYUI is not None
    root = Path(COMFYUI).resolve()

    def skip(folder: str, names: list[str]) -> set[str]:  # the install's data folders, at its top level only
        top = {"models", "output", "input", "temp", "user"} if Path(folder).resolve() == root else set()
        return {n for n in names if n == "__pycache__" or n in top}

    shutil.copytree(root, dest, symlinks=True, ignore=skip)
    if slow_step_s is not None:
        pack = dest / "custom_nodes" / "wan22_slow_steps"
        pack.mkdir(parents=True)
        (pack / "__init__.py").write_text(SLOW_STEPS.format(seconds=slow_step_s), encoding="utf-8")
    return dest


# The cpu tier records timings without judging them (its row's judge_timings = false); these tests check that
# the judging works on a real ComfyUI, so their tier table turns it on.
JUDGING_CPU_ROW = """
[tiers.cpu]
description = "the cpu tier, timings judged"
args = ["--cpu", "--disable-api-nodes"]
run_timeout_s = 300
models = "tiny"
scale = { width = 64, height = 64, frames = 9, steps = 4, split = 2 }
judge_timings = true
"""


@pytest.fixture
def gate(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    tiers = tmp_path_factory.mktemp("tiers") / "tiers.toml"
    tiers.write_text(JUDGING_CPU_ROW, encoding="utf-8")
    real_project(pytester, tmp_path_factory, log_dir="logs", baselines_dir="baselines", rounds=6, min_rounds=3,
                 warmup_rounds=1, tolerance=CPU_TOLERANCES, tiers_file=tiers)
    pytester.makepyfile(TEST)
    return pytester


@pytest.fixture
def installs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where copies of ComfyUI go: outside the pytester project, whose tests would otherwise collect theirs."""
    return tmp_path_factory.mktemp("installs")


def test_unchanged_rerun_passes_and_slowed_install_fails_as_regressed(gate: pytest.Pytester, installs: Path
                                                                       ) -> None:
    current = f"--wan22-comfyui-dir={COMFYUI}"
    gate.runpytest(current, "--wan22-update-baselines").assert_outcomes(passed=1)
    gate.runpytest(current).assert_outcomes(passed=1)
    slowed = copy_of_comfyui(installs / "ComfyUI-slowed", slow_step_s=SLOW_STEP_S)
    result = gate.runpytest(f"--wan22-comfyui-dir={slowed}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*: regressed (vs baseline): *slower (95% CI*", "*step: regressed*"])


def test_ab_against_an_identical_copy_passes_and_against_a_slowed_copy_fails(gate: pytest.Pytester, installs: Path
                                                                             ) -> None:
    same = copy_of_comfyui(installs / "ComfyUI-same")
    gate.runpytest(f"--wan22-comfyui-dir={same}", f"--wan22-ab-comfyui-dir={COMFYUI}").assert_outcomes(passed=1)
    slowed = copy_of_comfyui(installs / "ComfyUI-slowed", slow_step_s=SLOW_STEP_S)
    result = gate.runpytest(f"--wan22-comfyui-dir={slowed}", f"--wan22-ab-comfyui-dir={COMFYUI}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*: regressed (B vs A): *slower (95% CI*", "*step: regressed*",
                                 "*B (candidate) vs A (current), rounds interleaved A B A B*"])
    assert not (gate.path / "baselines").exists()

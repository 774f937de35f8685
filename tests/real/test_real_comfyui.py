"""The plugin against a real ComfyUI on the CPU with tiny synthetic models (set WAN22_COMFYUI_DIR and WAN22_PYTHON)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.fake_comfyui.harness import procs_mentioning

REPO = Path(__file__).resolve().parents[2]
COMFYUI = os.environ.get("WAN22_COMFYUI_DIR")
PYTHON = os.environ.get("WAN22_PYTHON")

pytestmark = pytest.mark.skipif(
    not (COMFYUI and PYTHON),
    reason="needs a real ComfyUI: set WAN22_COMFYUI_DIR to a ComfyUI 0.8.0 checkout and WAN22_PYTHON to an "
           "interpreter with its requirements (torch included)")

HEADER = f'''
from __future__ import annotations

import os
import signal
import threading

import pytest

from pytest_wan22.workflows import Variant, load_workflow

WF = load_workflow({str(REPO / "workflows" / "wan22_i2v_a14b.json")!r})
BASE = Variant(WF).duration(5)
'''


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    models = os.environ.get("WAN22_MODELS_DIR") or str(tmp_path_factory.getbasetemp() / "models")
    pytester.makeini(textwrap.dedent(f"""
        [pytest]
        wan22_comfyui_dir = {COMFYUI}
        wan22_python = {PYTHON}
        wan22_models_dir = {models}
        wan22_tier = cpu
        wan22_log_dir = logs
        wan22_rounds = 2
        wan22_warmup_rounds = 1
    """))
    return pytester


def test_cpu_run_records_node_times_and_seconds_per_step(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        def test_i2v(wan22_run):
            result = wan22_run(BASE)
            assert result.summary.rounds == 2
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    record = json.loads((project.path / "logs/main/records/high_low-5s-640p-default.2.json").read_text())
    assert record["outcome"] == "success"
    nodes = {n["title"]: n for n in record["nodes"]}
    assert nodes["KSampler (high noise)"]["seconds"] > 0
    assert nodes["VAE Decode"]["seconds"] > 0
    passes = record["passes"]
    assert [p["title"] for p in passes] == ["KSampler (high noise)", "KSampler (low noise)"]
    assert all(p["steps"] == 2 and len(p["step_times"]) == 2 and p["seconds"] > 0 for p in passes)
    video = record["outputs"][0]
    assert (video["frames"], video["width"], video["height"], video["fps"]) == (9, 64, 64, 16.0)
    assert record["environment"]["comfyui"] == "0.8.0"
    assert not procs_mentioning("main.py", str(project.path / "logs"))


def test_missing_model_fails_before_sampling(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        def test_i2v(wan22_run, wan22_models):
            wan22_run(BASE)  # warm: the server is up and the real models load

        def test_missing(wan22_run, monkeypatch):
            from pytest_wan22 import fixtures
            real = fixtures.adapt
            monkeypatch.setattr(fixtures, "adapt", lambda v, t, m: real(v, t, m).models(
                {"low": "wan2.2_i2v_low_noise_14B_fp16.safetensors"}))
            wan22_run(BASE.pass_order("low_high"))
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*low_high-5s-640p-default cannot run on this server:*",
        "*model file 'wan2.2_i2v_low_noise_14B_fp16.safetensors' not in models/diffusion_models*"])
    records = list((project.path / "logs/main/records").glob("low_high*.json"))
    assert records == []  # nothing was submitted


def test_comfyui_killed_mid_run_fails_that_test_and_the_next_gets_a_new_server(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        SLOW = BASE.label("slow")

        def test_killed(wan22_run, wan22_server, monkeypatch):
            from pytest_wan22 import fixtures
            real = fixtures.adapt
            # a bigger graph, so the sampler is still busy when the process group is killed
            monkeypatch.setattr(fixtures, "adapt", lambda v, t, m: real(v, t, m).scaled(
                width=256, height=256, frames=33, steps=30, split=15))
            pid = wan22_server.handle.pid
            threading.Timer(2.0, os.killpg, (pid, signal.SIGKILL)).start()
            wan22_run(SLOW, rounds=1, warmup_rounds=0)

        def test_next(wan22_run, wan22_server):
            assert wan22_server.restarts == 1
            assert wan22_run(BASE, rounds=1, warmup_rounds=0).last.ok
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*round 0: server_died: ComfyUI stopped answering*"])
    assert not procs_mentioning("main.py", str(project.path / "logs"))

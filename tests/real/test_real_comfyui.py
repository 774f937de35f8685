"""The plugin against a real ComfyUI on the CPU with tiny synthetic models (set WAN22_COMFYUI_DIR and WAN22_PYTHON)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.fake_comfyui.harness import procs_mentioning
from tests.real.conftest import COMFYUI, PYTHON, REPO, real_project

HEADER = f'''
from __future__ import annotations

import os
import signal

import pytest

from pytest_wan22.workflows import Variant, load_workflow

WF = load_workflow({str(REPO / "workflows" / "wan22_i2v_a14b.json")!r})
BASE = Variant(WF).duration(5)
'''


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    return real_project(pytester, tmp_path_factory, comfyui_dir=COMFYUI, log_dir="logs", rounds=2,
                        warmup_rounds=1)


def test_cpu_run_records_node_times_and_seconds_per_step(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        def test_i2v(wan22_run):
            result = wan22_run(BASE)
            assert result.summary.rounds == 2
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    (last,) = (project.path / "logs/main/records").glob("high_low-5s-640p-default.2.*.json")
    record = json.loads(last.read_text())
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


def test_a_model_the_synthetic_set_cannot_write_fails_before_sampling(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        def test_i2v(wan22_run, wan22_models):
            wan22_run(BASE)  # warm: the server is up and the synthetic models load

        def test_missing(wan22_run, monkeypatch):
            from pytest_wan22 import rounds
            real = rounds.adapt
            monkeypatch.setattr(rounds, "adapt", lambda v, t, m: real(v, t, m).models(
                {"low": "wan2.1_i2v_480p_14B_fp16.safetensors"}))
            wan22_run(BASE.pass_order("low_high"))
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*cannot tell the layout of 'wan2.1_i2v_480p_14B_fp16.safetensors', which UNETLoader*loads: the name "
        "says Wan 2.1*"])
    records = list((project.path / "logs/main/records").glob("low_high*.json"))
    assert records == []  # nothing was submitted


def test_comfyui_killed_mid_run_fails_that_test_and_the_next_gets_a_new_server(project: pytest.Pytester) -> None:
    project.makepyfile(HEADER + textwrap.dedent("""
        def test_killed(wan22_run, wan22_server, monkeypatch):
            # Killed at the sampler's first step, so the kill lands inside this test's run whatever the CPU's
            # speed (a timer did not: where the run ended first, it killed the server during the next test).
            from pytest_wan22.client import ComfyClient

            real_run = ComfyClient.run

            def run_and_kill(self, prompt, *, on_event=None, **kw):
                def kill_at_first_step(event):
                    if event.type == "progress" and wan22_server.alive():
                        os.killpg(wan22_server.handle.pid, signal.SIGKILL)
                    if on_event is not None:
                        on_event(event)

                return real_run(self, prompt, on_event=kill_at_first_step, **kw)

            monkeypatch.setattr(ComfyClient, "run", run_and_kill)
            wan22_run(BASE.label("killed"), rounds=1, warmup_rounds=0)

        def test_next(wan22_run, wan22_server):
            assert wan22_server.restarts == 1
            assert wan22_run(BASE, rounds=1, warmup_rounds=0).last.ok
    """))
    result = project.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_killed*", "*round 1*: server_died: ComfyUI stopped answering*"])
    assert "test_next" not in "".join(line for line in result.outlines if "FAILED" in line)
    log = (project.path / "logs/main/comfyui.log").read_text()
    assert log.count("=== wan22: starting") == 2  # launched once, started again once for test_next
    assert not procs_mentioning("main.py", str(project.path / "logs"))


def test_attach_mode_saves_records_and_reads_the_video_of_a_server_it_did_not_start(
        project: pytest.Pytester, tmp_path: Path) -> None:
    import shutil

    from pytest_wan22.launcher import ComfyServer, ServerSpec
    from pytest_wan22.synth import ensure_models

    assert COMFYUI
    assert PYTHON
    models = Path(os.environ.get("WAN22_MODELS_DIR") or tmp_path / "models") / "tiny"
    tiny = ensure_models(PYTHON, models, "tiny")
    (models / "custom_nodes").mkdir(exist_ok=True)
    work = tmp_path / "theirs"
    server = ComfyServer(ServerSpec(comfyui_dir=Path(COMFYUI), work_dir=work, python=PYTHON, base_directory=models,
                                    args=("--cpu", "--disable-api-nodes"), install_probe=False))
    handle = server.start()
    try:
        cond = tiny.files["conditioning"]  # LoadTrainingDataset reads it from the server's output folder
        shutil.copytree(models / cond, work / cond, dirs_exist_ok=True)
        project.makepyfile(HEADER + textwrap.dedent("""
            def test_i2v(wan22_run):
                assert wan22_run(BASE).summary.rounds == 2
        """))
        # the set the plugin writes the graph's files into is the attached server's base directory
        result = project.runpytest_subprocess(f"--wan22-url={handle.url}", f"--wan22-models-dir={models.parent}")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["wan22: attached: no server log*"])
        records = sorted((project.path / "logs/main/records").glob("*.json"))
        assert [r.name.split(".")[1] for r in records] == ["0", "1", "2"]
        assert all(r.name.startswith("high_low-5s-640p-default.") for r in records)
        first, last = (json.loads(r.read_text()) for r in (records[0], records[-1]))
        assert first["warnings"][-1].startswith("attach: attached server: its log is not ours")
        assert last["outcome"] == "success"
        video = last["outputs"][0]  # read from the server's output folder, found through its process
        assert video["path"].startswith(str(work / "output"))
        assert (video["frames"], video["width"], video["height"], video["fps"]) == (9, 64, 64, 16.0)
        assert last["environment"]["scale"] == "64x64, 9 frames, 4 steps split 2"
        assert server.alive()  # not ours to stop
    finally:
        server.stop()

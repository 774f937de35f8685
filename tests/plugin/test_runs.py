"""End to end against the fake ComfyUI, launched by the plugin as a real subprocess."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Project = Callable[..., pytest.Pytester]

RUN_ONE = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    result = wan22_run(BASE)
    assert result.summary.rounds == 2
    assert [p.steps for p in result.last.passes] == [2, 2]
    assert result.last.vram.peak_process_mib == 6000
"""


def _records(p: pytest.Pytester) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(p.path.glob("logs/*/records/*.json"))]


def test_success_records_timings_vram_and_environment(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE)
    result = p.runpytest("--wan22-log-dir", "logs")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*wan22 runs*", "*high_low-5s-640p-lightx2v_4step*success*"])
    records = _records(p)
    assert [r["round"] for r in records] == [0, 1, 2]
    assert [r["warmup"] for r in records] == [True, False, False]
    last = records[-1]
    assert last["environment"]["gpu_name"] == "NVIDIA GeForce RTX 5090"
    assert last["environment"]["tier"] == "rtx5090"
    assert last["vram"]["available"]
    assert last["vram"]["samples"]
    titles = {n["title"] for n in last["nodes"]}
    assert {"KSampler (high noise)", "KSampler (low noise)", "Save Video"} <= titles
    assert len({r["seed"] for r in records}) == 3  # a fresh seed each round: nothing is served from the cache


def test_gpu_oom_fails_with_node_and_log_tail(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_SCENARIO": "oom"})
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*round 0: oom: out of memory in KSamplerAdvanced 'KSampler (high noise)' (node *) at 5.9 GiB*",
        "*ComfyUI log (last lines)*",
        "*Got an OOM, unloading all loaded models*",
    ])


def test_vram_over_budget_fails_with_both_figures(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        @pytest.mark.wan22_budget(4.5)
        def test_variant(wan22_run):
            wan22_run(BASE)
    """)
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*peak VRAM 5.86 GiB is over the budget of 4.5 GiB (rtx5090)*"])


def test_offload_means_it_does_not_fit(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_SCENARIO": "offload"})
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*does not fit on rtx5090 at 5.86 GiB: ComfyUI had to offload*2796.10 MB*"])


def test_missing_model_fails_before_sampling_naming_file_and_folder(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_MODELS": json.dumps({"diffusion_models": []})})
    result = p.runpytest("--wan22-log-dir", "logs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors*models/diffusion_models*"])
    assert _records(p) == []  # nothing was submitted


def test_missing_model_skips_on_request(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_MODELS": json.dumps({"diffusion_models": []})})
    result = p.runpytest("--wan22-missing", "skip", "-rs")
    result.assert_outcomes(skipped=1)


def test_interpolation_without_the_node_pack_is_skipped_with_reason(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_rife(wan22_run):
            wan22_run(BASE.interpolate(2))
    """)
    result = p.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*RIFE VFI*Fannovel16/ComfyUI-Frame-Interpolation*"])


def test_server_killed_mid_run_fails_that_test_and_the_next_gets_a_new_server(wan22_project: Project) -> None:
    p = wan22_project("""
        import os

        @pytest.mark.rtx5090
        def test_a_dies(wan22_run):
            os.environ["FAKE_COMFYUI_SCENARIO"] = "success"  # the restarted server behaves
            wan22_run(BASE)

        @pytest.mark.rtx5090
        def test_b_recovers(wan22_run):
            assert wan22_run(BASE).last.ok
    """, fake_env={"FAKE_COMFYUI_SCENARIO": "crash_during_run"})
    result = p.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*_ test_a_dies _*", "*round 0: server_died: ComfyUI stopped answering*",
                                 "*the process dies now (SIGKILL)*"])


def test_crash_on_start_reports_exit_code_and_log(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_CRASH_ON_START": "3"})
    result = p.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ComfyUI exited with code 3 during start*", "*last log lines:*"])


def test_start_timeout_kills_the_group(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_HANG": "1"})
    result = p.runpytest("--wan22-startup-timeout", "2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*did not answer*within 2 s*--wan22-startup-timeout*"])


def test_busy_port_is_refused_with_the_fix(wan22_project: Project) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = wan22_project(RUN_ONE)
        result = p.runpytest("--wan22-port", str(port))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*port {port} on 127.0.0.1 is already in use; pass --wan22-port 0*"])


def test_malformed_workflow_is_a_clear_error(wan22_project: Project, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"1": {"class_type": "KSampler"}}')
    p = wan22_project(f"""
        def test_load():
            load_workflow({str(bad)!r})
    """)
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*WorkflowError: *bad.json: node '1' (KSampler) has no inputs object*Export (API)*"])


def test_baselines_are_written_only_on_request_then_a_slowdown_fails(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE)
    p.runpytest().assert_outcomes(passed=1)
    assert not (p.path / "baselines").exists()
    p.runpytest("--wan22-update-baselines").assert_outcomes(passed=1)
    stored = json.loads((p.path / "baselines" / "rtx5090" / "wan22_i2v_a14b.json").read_text())
    assert list(stored["variants"]) == ["high_low-5s-640p-lightx2v_4step"]
    assert stored["machine"]["gpu_name"] == "NVIDIA GeForce RTX 5090"
    # Rounds of a few ms on a shared CPU (a browser test may run beside this one): only a gross slowdown is signal.
    p.runpytest("--wan22-tolerance=time:300%", "--wan22-tolerance=step:300%").assert_outcomes(passed=1)
    # A hundred times slower sampler steps: a slowdown far beyond any noise band.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.2")
        result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*high_low-5s-640p-lightx2v_4step: regressed*", "*step: *regressed*"])


def test_after_an_oom_the_next_test_runs_on_the_same_recovered_server(wan22_project: Project) -> None:
    p = wan22_project("""
        SERVERS = []

        @pytest.mark.rtx5090
        def test_a_compiled_variant_ooms(wan22_run, wan22_server):
            SERVERS.append(wan22_server.handle.pid)
            wan22_run(BASE.torch_compile())

        @pytest.mark.rtx5090
        def test_b_plain_variant_runs(wan22_run, wan22_server):
            assert wan22_run(BASE).last.ok
            assert wan22_server.handle.pid == SERVERS[0]  # ComfyUI freed its memory; no restart was needed
    """, fake_env={"FAKE_COMFYUI_SCENARIO": "oom", "FAKE_COMFYUI_FAIL_NODE": "TorchCompileModel"})
    result = p.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*round 0: oom: out of memory in TorchCompileModel*"])


def test_attention_backend_without_its_package_is_skipped_with_reason(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_sage(wan22_run):
            wan22_run(BASE.label("sage"), server_args=("--use-sage-attention",))

        @pytest.mark.rtx5090
        def test_default_profile_still_runs(wan22_run):
            assert wan22_run(BASE).last.ok
    """)
    result = p.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*ComfyUI cannot start with --use-sage-attention: the sageattention package is "
                                 "not installed*"])


def test_without_nvml_vram_is_not_measured_and_nothing_crashes(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            result = wan22_run(BASE)
            assert result.last.vram is None
            assert result.summary.peak_vram_mib is None
    """, spec=None)
    result = p.runpytest("--wan22-tier", "rtx5090")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["wan22: VRAM not measured: NVML is unavailable*--wan22-tier*"])


def test_attach_mode_uses_a_running_server_and_launches_nothing(wan22_project: Project, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    fake_main = Path(__file__).resolve().parents[1] / "fake_comfyui" / "main.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "attached-output"
    server = subprocess.Popen([sys.executable, str(fake_main), "--listen", "127.0.0.1", "--port",
                               str(port), "--output-directory", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the fake did not start"
                time.sleep(0.2)
        p = wan22_project(RUN_ONE.replace("assert result.last.vram.peak_process_mib == 6000", ""))
        result = p.runpytest(f"--wan22-url=http://127.0.0.1:{port}", "--wan22-comfyui-dir=/nonexistent")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*ComfyUI: attach http://127.0.0.1:{port}*"])
        assert server.poll() is None  # left running: it is not ours to stop
        assert not (p.path / "logs").exists()
    finally:
        server.kill()
        server.wait()


def test_workflow_library_fixture_loads_by_name_and_names_the_known_ones(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_by_name(wan22_run, wan22_workflows):
            v = wan22_workflows.variant("wan22_i2v_a14b").schedule("lightx2v_4step").duration(5)
            assert wan22_run(v).last.ok

        def test_unknown(wan22_workflows):
            wan22_workflows.load("wan23_i2v")
    """, ini=f"wan22_workflows_dir = {Path(__file__).resolve().parents[2] / 'workflows'}")
    result = p.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*workflow */wan23_i2v.json does not exist (known: wan22_i2v_a14b); fix the name or "
                                 "--wan22-workflows-dir*"])

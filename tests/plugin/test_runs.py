"""End to end against the fake ComfyUI, launched by the plugin as a real subprocess."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugin.conftest import RTX5090

Project = Callable[..., pytest.Pytester]

RUN_ONE = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    result = wan22_run(BASE)
    assert result.summary.rounds == 2
    assert [p.steps for p in result.last.passes] == [2, 2]
    assert result.last.vram.peak_process_mib == 6000
"""


WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "wan22_i2v_a14b.json"
HEADER_RUN = """
from __future__ import annotations

import pytest

from pytest_wan22.workflows import Variant, load_workflow

BASE = Variant(load_workflow({path!r})).schedule("lightx2v_4step").duration(5)
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
        "*round 1*: oom: out of memory in KSamplerAdvanced 'KSampler (high noise)' (node *) at 5.9 GiB*",
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
    result.stdout.fnmatch_lines([
        "*does not fit on rtx5090 at 5.86 GiB: ComfyUI had to make room (model loaded partially, 2796.10 MB "
        "offloaded)*"])


def test_model_swap_between_passes_means_it_does_not_fit(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_SCENARIO": "swap"})
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*round 1* does not fit on rtx5090 at 5.86 GiB: ComfyUI had to make room (model "
                                 "unloaded partially to make room (7012.34 MB freed))*"])


def test_offload_allowed_for_the_variant_passes(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            assert wan22_run(BASE, allow_offload=True).records[0].warnings
    """, fake_env={"FAKE_COMFYUI_SCENARIO": "offload"})
    p.runpytest().assert_outcomes(passed=1)


H200 = {"devices": [{"name": "NVIDIA H200", "memory_mib": 143771, "uuid": "GPU-h200-0", "used_mib": 600,
                     "processes": [{"pid": "children", "used_mib": 23603}]}]}


@pytest.mark.parametrize(("torch_peak_mib", "outcome"), [(22000, "passed"), (22400, "failed")])
def test_emulated_card_filling_its_allowance_fits_and_past_it_does_not(
        wan22_project: Project, torch_peak_mib: int, outcome: str) -> None:
    """An emulated RTX 4090 (23.5 GiB cap) whose run peaks at 23.05 GiB on NVML with nothing offloaded fits:
    ComfyUI fills what its profile allows. The allocator's peak (reserved = 1.08 x the fake's figure) past the
    cap does not."""
    p = wan22_project("""
        @pytest.mark.rtx4090
        def test_variant(wan22_run):
            assert wan22_run(BASE).last.vram.peak_process_mib == 23603
    """, spec=H200, fake_env={"FAKE_COMFYUI_TORCH_PEAK_MIB": str(torch_peak_mib)})
    result = p.runpytest("--wan22-emulate-tier", "rtx4090")
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*round 1* does not fit on rtx4090: it peaked at 23.62 GiB, past the 23.50 GiB "
                                     "the profile lets ComfyUI use (the emulated card's 23.5 GiB)*"])


def test_allowance_is_the_card_minus_reserve_vram(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_TORCH_PEAK_MIB": "30000"})
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*it peaked at 31.64 GiB, past the 30.84 GiB the profile lets ComfyUI use (the "
                                 "card's 31.84 GiB minus --reserve-vram 1)*"])


@pytest.mark.parametrize(("video", "message"), [
    ("frames:80", "*round 1*: wan22_i2v_a14b_00001_.mp4 has 80 frames, the variant should give 81*"),
    ("fps:15", "*round 1*: wan22_i2v_a14b_00001_.mp4 plays at 15 fps, the variant should give 16*"),
    ("empty", "*round 1*: wan22_i2v_a14b_00001_.mp4 is empty (0 bytes)*"),
    ("missing", "*round 1*: the run succeeded but saved no file*"),
])
def test_a_wrong_video_fails_the_test(wan22_project: Project, video: str, message: str) -> None:
    p = wan22_project(RUN_ONE, fake_env={"FAKE_COMFYUI_VIDEO": video})
    result = p.runpytest("--wan22-log-dir", "logs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    if video.startswith("frames"):
        assert _records(p)[0]["outputs"][0]["frames"] == 80


def test_the_video_of_a_passing_run_is_read(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            out = wan22_run(BASE.interpolate(2)).last.outputs[0]
            assert (out.frames, out.fps, out.width, out.height) == (161, 32.0, 640, 640)
    """, fake_env={"FAKE_COMFYUI_CUSTOM_NODES": "frame-interpolation"})
    p.runpytest().assert_outcomes(passed=1)


def test_a_scaled_tier_keeps_ids_and_says_the_scale_in_header_summary_and_records(
        wan22_project: Project, tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[tiers.rtx5090]\nmatch = ["RTX 5090"]\nargs = ["--normalvram"]\n'
                     'scale = { width = 64, height = 64, frames = 9, steps = 4, split = 2 }\n')
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run, request):
            out = wan22_run(BASE).last.outputs[0]
            assert (out.frames, out.width, out.height) == (9, 64, 64)
    """, ini=f"wan22_tiers_file = {tiers}")
    result = p.runpytest("--wan22-log-dir", "logs", "--wan22-update-baselines", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "wan22: the rtx5090 tier runs every variant scaled to 64x64, 9 frames, 4 steps split 2; test ids and "
        "baseline keys name the variant as written",
        "*test_suite.py::test_variant PASSED*",
        "*high_low-5s-640p-lightx2v_4step*success*",
        "wan22: scaled to 64x64, 9 frames, 4 steps split 2 by the tier; the ids above name the variants as written",
    ])
    assert {r["environment"]["scale"] for r in _records(p)} == {"64x64, 9 frames, 4 steps split 2"}
    stored = json.loads((p.path / "baselines" / "rtx5090" / "wan22_i2v_a14b.json").read_text())
    assert list(stored["variants"]) == ["high_low-5s-640p-lightx2v_4step"]
    assert stored["variants"]["high_low-5s-640p-lightx2v_4step"]["summary"]["machine"]["scale"] == (
        "64x64, 9 frames, 4 steps split 2")


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
    result.stdout.fnmatch_lines(["*_ test_a_dies _*", "*round 1*: server_died: ComfyUI stopped answering*",
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
        p = wan22_project(RUN_ONE + RUN_ONE.replace("test_variant", "test_other"))
        result = p.runpytest("--wan22-port", str(port))
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # once, at start: not an error in each test
    result.stderr.fnmatch_lines([f"ERROR: port {port} on 127.0.0.1 is already in use; pass --wan22-port 0*"])
    assert sum("already in use" in line for line in result.outlines + result.errlines) == 1


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
    assert stored["variants"]["high_low-5s-640p-lightx2v_4step"]["summary"]["machine"]["gpu_name"] == (
        "NVIDIA GeForce RTX 5090")
    p.runpytest().assert_outcomes(passed=1)
    # A hundred times slower sampler steps: a slowdown far beyond any noise band.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.2")
        result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*high_low-5s-640p-lightx2v_4step: regressed*", "*step: *regressed*"])


def test_a_baseline_from_another_gpu_of_the_tier_is_refused(wan22_project: Project) -> None:
    other = {"devices": [{**RTX5090["devices"][0], "name": "NVIDIA GeForce RTX 5090 D", "uuid": "GPU-5090-D"}]}
    p = wan22_project(RUN_ONE, spec=other)
    p.runpytest("--wan22-update-baselines").assert_outcomes(passed=1)
    p = wan22_project(RUN_ONE)
    result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*high_low-5s-640p-lightx2v_4step: baseline recorded on NVIDIA GeForce RTX 5090 D, "
                                 "this run is on NVIDIA GeForce RTX 5090; record this GPU's own baseline*"])


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
    result.stdout.fnmatch_lines(["*round 1*: oom: out of memory in TorchCompileModel*"])


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
        p = wan22_project(RUN_ONE)
        result = p.runpytest(f"--wan22-url=http://127.0.0.1:{port}", "--wan22-comfyui-dir=/nonexistent",
                             "--wan22-log-dir", "logs")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*ComfyUI: attach http://127.0.0.1:{port}*",
                                     "wan22: attached: no server log*offloads, model swaps, OOM retries*"])
        assert server.poll() is None  # left running: it is not ours to stop
        records = _records(p)  # saved like launch mode, per process (the server's PID from its port)
        assert [r["round"] for r in records] == [0, 1, 2]
        assert all(r["vram"]["peak_process_mib"] == 6000 for r in records)
        assert [w for r in records for w in r["warnings"] if w.startswith("attach:")] == [
            "attach: attached server: its log is not ours, so offloads, model swaps, OOM retries and recompiles "
            "are not seen and failures carry no log tail"]
        assert all(r["outputs"][0]["frames"] == 81 for r in records)  # its output folder, found from its PID
        assert not list((p.path / "logs").glob("*/*.log"))  # no server log of ours

        # A server whose process cannot be found (another host, another user): device-wide VRAM.
        (p.path / "conftest.py").write_text((p.path / "conftest.py").read_text() + textwrap.dedent("""
            import pytest


            @pytest.fixture(autouse=True)
            def _remote(monkeypatch):
                import pytest_wan22.launcher
                monkeypatch.setattr(pytest_wan22.launcher, "listening_pid", lambda host, port: None)
        """))
        p.makepyfile(test_suite=HEADER_RUN.format(path=str(WORKFLOW)) + textwrap.dedent("""
            @pytest.mark.rtx5090
            def test_variant(wan22_run):
                vram = wan22_run(BASE).last.vram
                assert vram.available and vram.peak_process_mib is None and vram.peak_device_mib == 900
                assert "only device-wide memory was measured" in vram.reason
        """))
        result = p.runpytest(f"--wan22-url=http://127.0.0.1:{port}", "--wan22-log-dir", "logs2")
        result.assert_outcomes(passed=1)
        first = json.loads(sorted((p.path / "logs2").glob("*/records/*.0.*.json"))[0].read_text())
        assert "VRAM is the whole device's" in first["warnings"][-1]
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
    result.stdout.fnmatch_lines(["*workflow */wan23_i2v.json does not exist (known: wan22_i2v_a14b, "
                                 "wan22_i2v_a14b_gguf); fix the name or --wan22-workflows-dir*"])


def test_sessions_sharing_a_log_folder_keep_every_record(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE)
    p.runpytest("--wan22-log-dir", "logs").assert_outcomes(passed=1)
    p.runpytest("--wan22-log-dir", "logs").assert_outcomes(passed=1)
    records = _records(p)
    assert len(records) == 6
    assert len({r["prompt_id"] for r in records}) == 6


def test_logs_and_records_go_to_a_kept_session_folder_whose_path_is_printed(wan22_project: Project) -> None:
    p = wan22_project(RUN_ONE)
    runs = p.path / ".wan22" / "runs"
    old = runs / "20200101T000000.000Z-1"
    (old / "main").mkdir(parents=True)
    for n in range(2, 22):  # 21 older sessions: with this one, two are beyond the 20 kept
        (runs / f"20200101T000000.000Z-{n}").mkdir()
    result = p.runpytest()
    result.assert_outcomes(passed=1)
    (session,) = [d for d in runs.iterdir() if not d.name.startswith("2020")]
    result.stdout.fnmatch_lines([f"wan22: server logs and run records: {session} (the last 20 sessions are kept; "
                                 "--wan22-log-dir to choose)", "*wan22 runs*",
                                 f"wan22: server logs and run records in {session}"])
    assert (session / "main" / "comfyui.log").is_file()
    assert len(list((session / "main" / "records").glob("*.json"))) == 3
    assert len(list(runs.iterdir())) == 20
    assert not old.exists()  # the oldest went

"""The plugin under pytest-xdist (a GPU and a ComfyUI per worker) and under Ctrl-C, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_comfyui.harness import group_members, needs_proc, process_group, procs_mentioning, wait_until

Project = Callable[..., pytest.Pytester]

FAKE_MAIN = "tests/fake_comfyui/main.py"

TWO_GPUS = {"devices": [
    {"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607, "uuid": f"GPU-5090-{i}", "used_mib": 900,
     "processes": [{"pid": "children", "used_mib": 6000}]}
    for i in range(2)]}

SECONDS = (1, 2, 3, 4)

PER_WORKER = """
import json
import os


@pytest.mark.rtx5090
@pytest.mark.parametrize("seconds", {seconds!r})
def test_variant(wan22_run, wan22_server, wan22_profile, seconds):
    result = wan22_run(BASE.duration(seconds))
    assert result.summary.rounds == 2
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    seen = {{"worker": worker, "cuda": wan22_profile.env["CUDA_VISIBLE_DEVICES"], "url": wan22_server.handle.url,
            "log": str(wan22_server.handle.log_path), "variant": result.summary.variant_id}}
    with open(os.path.join({seen!r}, worker + ".jsonl"), "a") as f:
        f.write(json.dumps(seen) + "\\n")
"""


def _variant(seconds: int) -> str:
    return f"high_low-{seconds}s-640p-lightx2v_4step"


def _summary_rows(stdout: str) -> set[tuple[str, str, str]]:
    """(variant, round, outcome) of each row of the 'wan22 runs' table."""
    rows = set()
    for line in stdout.split("wan22 runs", 1)[-1].splitlines():
        m = re.match(r"wan22_i2v_a14b\s+(high_low-\S+)\s+(\d+(?: \(warm-up\))?)\s+(\w+)\s", line)
        if m:
            rows.add((m.group(1), m.group(2), m.group(3)))
    return rows


def test_two_workers_two_gpus_two_servers_one_baseline_file(wan22_project: Project,
                                                            pytester: pytest.Pytester) -> None:
    seen_dir = pytester.path / "seen"
    seen_dir.mkdir()
    p = wan22_project(PER_WORKER.format(seconds=SECONDS, seen=str(seen_dir)), spec=TWO_GPUS)
    result = p.runpytest_subprocess("-n", "2", "--wan22-log-dir", "logs", "--wan22-update-baselines")
    result.assert_outcomes(passed=4)

    seen = [json.loads(line) for f in sorted(seen_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]
    by_worker: dict[str, list[dict[str, str]]] = {}
    for s in seen:
        by_worker.setdefault(s["worker"], []).append(s)
    assert sorted(by_worker) == ["gw0", "gw1"]  # both workers ran tests
    cuda = {w: {s["cuda"] for s in ss} for w, ss in by_worker.items()}
    assert cuda == {"gw0": {"GPU-5090-0"}, "gw1": {"GPU-5090-1"}}  # a GPU of its own per worker
    urls = {w: {s["url"] for s in ss} for w, ss in by_worker.items()}
    assert all(len(u) == 1 for u in urls.values())  # one server per worker for the whole session
    assert urls["gw0"] != urls["gw1"]
    logs = {w: {s["log"] for s in ss} for w, ss in by_worker.items()}
    assert logs == {"gw0": {str(p.path / "logs" / "gw0" / "comfyui.log")},
                    "gw1": {str(p.path / "logs" / "gw1" / "comfyui.log")}}
    for worker, url in urls.items():
        port = next(iter(url)).rsplit(":", 1)[1]
        log = (p.path / "logs" / worker / "comfyui.log").read_text()
        assert log.count("=== wan22: starting ") == 1
        assert f"--port {port} " in log
    assert sorted(s["variant"] for s in seen) == sorted(_variant(n) for n in SECONDS)

    # The controller's summary holds every worker's rounds.
    rows = _summary_rows(result.stdout.str())
    assert rows == {(_variant(n), r, "success") for n in SECONDS for r in ("1 (warm-up)", "2", "3")}
    result.stdout.fnmatch_lines(["*wan22: baselines written under*"])

    # One baseline file, written by the controller, with the variants of both workers.
    files = sorted((p.path / "baselines").rglob("*.json"))
    assert files == [p.path / "baselines" / "rtx5090" / "wan22_i2v_a14b.json"]
    stored = json.loads(files[0].read_text())
    assert sorted(stored["variants"]) == sorted(_variant(n) for n in SECONDS)
    assert all(v["summary"]["rounds"] == 2 for v in stored["variants"].values())


def test_more_workers_than_gpus_is_refused_before_any_worker_starts(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(BASE)
    """, spec=TWO_GPUS)
    result = p.runpytest_subprocess("-n", "3", "--wan22-log-dir", "logs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: -n 3 starts 3 xdist workers, one GPU each, but this machine has 2 GPU(s); "
                                 "run at most 2 xdist workers (-n 2 or -n auto)*--wan22-gpu-index"])
    assert "crashed worker" not in result.stdout.str() + result.stderr.str()
    assert not (p.path / "logs").exists()  # no server was started


def test_pinned_gpu_index_lets_workers_share_one_gpu(wan22_project: Project) -> None:
    p = wan22_project("""
        def test_device(wan22_device):
            assert wan22_device.uuid == "GPU-5090-1"
    """, spec=TWO_GPUS)
    result = p.runpytest_subprocess("-n", "3", "--wan22-gpu-index", "1")
    result.assert_outcomes(passed=1)


def test_n_auto_starts_one_worker_per_gpu(wan22_project: Project) -> None:
    three = {"devices": [{**TWO_GPUS["devices"][0], "uuid": f"GPU-5090-{i}"} for i in range(3)]}
    p = wan22_project("""
        import os

        @pytest.mark.parametrize("n", range(6))
        def test_where(wan22_device, n):
            assert wan22_device.uuid == "GPU-5090-" + os.environ["PYTEST_XDIST_WORKER"][2:]
    """, spec=three)
    result = p.runpytest_subprocess("-n", "auto")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*3 workers [[]6 items[]]*"])  # this box has fewer cores than that


# --------------------------------------------------------------------------- signals


HANGS = """
@pytest.mark.rtx5090
def test_hangs(wan22_run):
    wan22_run(BASE)
"""




def _run_until_hanging(p: pytest.Pytester) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start pytest on a variant the fake never finishes; return it once the prompt is in the server,
    with the server's process id (its process group) and the log dir."""
    logs = p.path / "logs"
    out = (p.path / "pytest.out").open("w")
    proc = p.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--wan22-log-dir", str(logs),
                    "--wan22-run-timeout", "600", "-s"], stdout=out, stderr=subprocess.STDOUT,
                   stdin=subprocess.DEVNULL)
    out.close()
    log = logs / "main" / "comfyui.log"

    def prompt_running() -> bool:
        return log.is_file() and "got prompt" in log.read_text(errors="replace")

    if not wait_until(prompt_running, 60) or proc.poll() is not None:
        proc.kill()
        proc.wait()
        pytest.fail("the run never reached the fake server:\n" + (p.path / "pytest.out").read_text())
    m = re.search(r"\(fake ComfyUI, pid (\d+),", log.read_text())
    assert m, log.read_text()
    pid = int(m.group(1))
    assert pid in procs_mentioning(FAKE_MAIN, str(logs))
    assert process_group(pid) == pid  # the server leads its own process group
    return proc, pid, logs


@pytest.fixture
def hanging(wan22_project: Project) -> pytest.Pytester:
    """A project whose one variant hangs in the fake until interrupted."""
    return wan22_project(HANGS, fake_env={"FAKE_COMFYUI_SCENARIO": "hang_during_run"})


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_the_server(hanging: pytest.Pytester, signum: int) -> None:
    proc, pid, logs = _run_until_hanging(hanging)
    try:
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (hanging.path / "pytest.out").read_text()
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert procs_mentioning(FAKE_MAIN, str(logs)) == []
    assert group_members(pid) == []  # the watchdog went with the server
    with pytest.raises(ProcessLookupError):  # pytest reaped the whole group before it exited
        os.killpg(pid, 0)


@needs_proc
def test_sigkill_of_pytest_leaves_the_server_to_the_watchdog(hanging: pytest.Pytester) -> None:
    proc, pid, logs = _run_until_hanging(hanging)
    try:
        assert len(group_members(pid)) >= 2  # server and watchdog
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert wait_until(lambda: not group_members(pid), 10), f"alive after pytest was SIGKILLed: {group_members(pid)}"
        assert procs_mentioning(FAKE_MAIN, str(logs)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if group_members(pid):
            os.killpg(pid, signal.SIGKILL)

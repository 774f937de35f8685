"""Options, markers, tier detection and skips, and bad input caught before a server starts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_wan22.options import OPTIONS
from pytest_wan22.tiers import load_tiers


def test_help_lists_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for opt in OPTIONS:
        assert opt.cli in out, opt.cli
        assert opt.dest in out, opt.dest
    assert "Wan 2.2 image-to-video gate" in out


def test_markers_come_from_the_tier_table(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    for name in load_tiers():
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}: run on the {name} tier*"])


def test_tier_markers_work_under_strict_markers(wan22_project: Callable[..., pytest.Pytester]) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_here():
            pass

        @pytest.mark.h200
        def test_elsewhere():
            pass

        @pytest.mark.rtx4090
        @pytest.mark.rtx5090
        def test_both():
            pass

        def test_unmarked():
            pass
    """)
    result = p.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "*wan22: tier rtx5090 (NVIDIA GeForce RTX 5090, 32607 MiB)*",
        "*SKIPPED*needs tier h200; this machine is rtx5090 (NVIDIA GeForce RTX 5090, 32607 MiB): run it where h200 "
        "is the GPU, or attach to a server there (--wan22-url); force its launch profile on this GPU with "
        "--wan22-tier=h200",
    ])


def test_no_gpu_means_the_cpu_tier(wan22_project: Callable[..., pytest.Pytester]) -> None:
    p = wan22_project("""
        @pytest.mark.cpu
        def test_cpu():
            pass

        @pytest.mark.rtx5090
        def test_gpu():
            pass
    """, spec={"devices": []})
    result = p.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs tier rtx5090; this machine is cpu (no GPU: NVML sees no GPU): run it where "
                                 "rtx5090 is the GPU, or attach to a server there (--wan22-url); here, -m cpu runs "
                                 "the same graphs on tiny synthetic models"])


def test_unknown_device_skips_tier_tests_and_says_how_to_add_it(wan22_project: Callable[..., pytest.Pytester]
                                                                ) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_gpu():
            pass
    """, spec={"devices": [{"name": "NVIDIA L4", "memory_mib": 23034}]})
    result = p.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*NVIDIA L4, 23034 MiB, which matches no tier*"])


def test_forced_tier_and_selection(wan22_project: Callable[..., pytest.Pytester]) -> None:
    p = wan22_project("""
        @pytest.mark.rtx4090
        def test_a():
            pass

        @pytest.mark.rtx5090
        def test_b():
            pass
    """)
    result = p.runpytest("--wan22-tier", "rtx4090", "-m", "rtx4090")
    result.assert_outcomes(passed=1, deselected=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wan22-tier", "rtx9090"], "unknown tier 'rtx9090' (--wan22-tier); known tiers: rtx5090, rtx4090*"),
        (["--wan22-tolerance", "speed:5%"], "*tolerance 'speed:5%' must look like METRIC:LIMIT*"),
        (["--wan22-rounds", "0"], "*at least one round is needed*"),
        (["--wan22-comfyui-dir", "/nonexistent/ComfyUI"],
         "*ComfyUI folder /nonexistent/ComfyUI does not exist; point --wan22-comfyui-dir*"),
        (["--wan22-emulate-tier", "rtx4090", "--wan22-update-baselines"], "*emulated timings*"),
    ],
)
def test_bad_input_is_a_usage_error_before_anything_starts(
        wan22_project: Callable[..., pytest.Pytester], args: list[str], message: str) -> None:
    p = wan22_project("""
        def test_never():
            raise AssertionError("must not run")
    """)
    result = p.runpytest(*args)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, 2)
    result.stderr.fnmatch_lines(["*" + message.lstrip("*")])


def test_all_skipped_session_never_starts_comfyui(wan22_project: Callable[..., pytest.Pytester]) -> None:
    p = wan22_project("""
        @pytest.mark.h200
        def test_needs_server(wan22_run):
            wan22_run(BASE)
    """)
    started = p.path / "started"
    fake = p.mkdir("comfy")
    fake.joinpath("main.py").write_text(f"open({str(started)!r}, 'w').close()\n")
    result = p.runpytest("--wan22-comfyui-dir", str(fake))
    result.assert_outcomes(skipped=1)
    assert not started.exists()

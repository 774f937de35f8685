"""The session's servers (servers.py) in process, on a fake launcher and client (tests/fakes/fake_servers.py): the
one launch command, a synthetic launch with the install's own node packs, servers that do not start or die."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.errors import Fail, ServerStartError, Skip
from pytest_wan22.gpu import DeviceInfo
from pytest_wan22.servers import Server, ServerPool, SyntheticModels, launch_command
from pytest_wan22.settings import Settings, Side
from pytest_wan22.synth import model_set
from pytest_wan22.tiers import Tier, load_tiers, make_profile
from tests.fakes.fake_servers import FakeWorld

TIERS = load_tiers()
TIER = TIERS["rtx5090"]  # --normalvram --reserve-vram 1.0 --fast fp16_accumulation --use-pytorch-cross-attention
DEVICE = DeviceInfo(0, "NVIDIA GeForce RTX 5090", "GPU-5090-0", "00000000:01:00.0", 32607, "580.95.05", "13.0")


def _pool(tmp_path: Path, world: FakeWorld, *, models: SyntheticModels | None = None, **options: Any) -> ServerPool:
    (tmp_path / "comfy").mkdir(parents=True, exist_ok=True)
    settings = Settings(rootdir=tmp_path, tiers=TIERS, comfyui_dir=tmp_path / "comfy", **options)
    return ServerPool(settings, make_profile(TIER), tmp_path / "work", models, DEVICE, launcher=world.launcher,
                      client=world.client)


# --------------------------------------------------------------------------- the launch command

def test_a_launch_command_is_the_tier_then_the_sides_flags_then_the_tests_then_the_hook() -> None:
    seen: list[tuple[str, ...]] = []

    def hook(tier: Tier, args: list[str], env: dict[str, str]) -> None:
        seen.append(tuple(args))
        args.append("--verbose")
        env["EXTRA"] = "1"

    side = Side(None, "python", ("--use-sage-attention", "--cache-lru", "8"))
    args, env = launch_command(make_profile(TIER), side, ("--cache-none", "--lowvram"), hook)
    assert seen == [("--reserve-vram", "1.0", "--fast", "fp16_accumulation", "--use-sage-attention",
                     "--cache-none", "--lowvram")]  # each flag replaced the one of its group before it
    assert args == (*seen[0], "--verbose")
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
                   "EXTRA": "1"}


def test_each_side_of_an_ab_session_launches_with_its_own_flags_over_the_tiers(tmp_path: Path) -> None:
    settings = Settings(rootdir=tmp_path, tiers=TIERS, comfyui_dir=tmp_path, server_args=("--use-sage-attention",),
                        ab=Side(tmp_path / "current", "python", ("--disable-smart-memory",), name="A"))
    profile = make_profile(TIER)
    a, _ = launch_command(profile, settings.sides["A"])
    b, _ = launch_command(profile, settings.sides["B"])
    assert a == (*TIER.args, "--disable-smart-memory")  # none of B's flags
    assert b == (*TIER.args[:-1], "--use-sage-attention")


def test_the_pool_launches_with_the_one_command_and_the_hook(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world, server_args=("--use-sage-attention",))
    pool.launch_hook = lambda tier, args, env: args.append("--verbose")
    pool.get(("--cache-none",))
    assert world.box("work").spec.args == (*TIER.args[:-1], "--use-sage-attention", "--cache-none", "--verbose")
    assert world.box("work").spec.name == "comfyui-cache-none"


# --------------------------------------------------------------------------- a synthetic set's launch

def _synthetic(tmp_path: Path) -> SyntheticModels:
    root = tmp_path / "synth"
    (root / "output" / "wan22_tiny_cond").mkdir(parents=True)  # the precomputed conditioning of the tiny set
    return SyntheticModels(root, model_set("tiny"))


def test_a_synthetic_launch_carries_the_installs_own_custom_nodes(tmp_path: Path) -> None:
    world = FakeWorld()
    models = _synthetic(tmp_path)
    pool = _pool(tmp_path, world, models=models)
    own = tmp_path / "comfy" / "custom_nodes"
    own.mkdir()
    pool.get()
    spec = world.box("work").spec
    assert spec.base_directory == models.root  # the synthetic set is the base directory...
    assert spec.custom_nodes == (own,)  # ...and the install's node packs load beside it
    spec.prepare()
    yaml = (spec.work_dir / "extra_model_paths.yaml").read_text()
    assert f'custom_nodes: "{own}"' in yaml
    assert "--extra-model-paths-config" in spec.command(8188)
    assert (spec.work_dir / "output" / "wan22_tiny_cond").is_dir()  # where LoadTrainingDataset reads it


def test_a_synthetic_launch_of_an_install_without_node_packs_adds_none(tmp_path: Path) -> None:
    world = FakeWorld()
    _pool(tmp_path, world, models=_synthetic(tmp_path)).get()
    assert world.box("work").spec.custom_nodes == ()


# --------------------------------------------------------------------------- servers that do not start or die

def test_a_server_that_does_not_start_fails_once_and_is_not_launched_again(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeWorld(refuse=lambda spec: ServerStartError.exited(1, ["python", "main.py"], "ImportError: torch"))
    pool = _pool(tmp_path, world)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "suite.py::test_first (call)")
    with pytest.raises(Fail, match="ComfyUI exited with code 1 during start") as first:
        pool.get()
    assert "ImportError: torch" in first.value.message
    with pytest.raises(Fail) as second:
        pool.get()
    assert second.value.message == ("ComfyUI did not start, so it is not started again for this test; the failure "
                                    "of suite.py::test_first says why")
    assert world.events == ["start work"]


def test_flags_whose_package_is_missing_skip_and_keep_skipping(tmp_path: Path) -> None:
    missing = "ImportError: the `sageattention` package must be installed first"
    world = FakeWorld(refuse=lambda spec: ServerStartError.exited(1, ["python"], missing)
                      if "--use-sage-attention" in spec.args else None)
    pool = _pool(tmp_path, world)
    for _ in range(2):
        with pytest.raises(Skip, match=r"ComfyUI cannot start with --use-sage-attention: the sageattention package "
                                       r"is not installed in "):
            pool.get(("--use-sage-attention",))
    assert world.events == ["start work"]
    pool.get()  # the tier's own profile still starts


def test_a_dead_server_is_started_again_cold(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world)
    server = pool.get()
    server.warm_shape, server.object_info = "warm", {"KSampler": {}}
    world.box("work").alive = False
    assert pool.get() is server
    assert (server.restarts, server.warm_shape, server.object_info) == (1, None, {})
    assert world.events == ["start work", "restart work"]


def test_a_dead_server_that_does_not_start_again_fails_naming_its_exit(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world)
    pool.get()
    world.box("work").alive, world.restart_fails = False, True
    with pytest.raises(Fail, match=r"^ComfyUI had exited \(code -9\) and did not start again: ComfyUI exited"):
        pool.get()
    with pytest.raises(Fail, match="did not start, so it is not started again"):
        pool.get()


def test_the_pool_tells_of_each_launch_and_of_being_left_with_none(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world)
    heard: list[Server | None] = []
    pool.on_change = lambda p, server: heard.append(server)
    server = pool.get()
    variation = pool.get(("--cache-none",))  # one variation at a time: the first server stops
    pool.stop()
    assert heard == [None, server, None, variation, None]  # none before each launch: the log tail is not an old one


def test_launch_flags_need_a_launched_server(tmp_path: Path) -> None:
    pool = _pool(tmp_path, FakeWorld(), url="http://127.0.0.1:8188")
    with pytest.raises(Skip, match="launch flags --cache-none need a launched server; drop --wan22-url"):
        pool.get(("--cache-none",))

"""The session's servers (servers.py) in process, on a fake launcher and client (tests/fakes/fake_servers.py): the
one launch command, a synthetic launch with the install's own node packs, servers that do not start or die."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22 import launcher, preflight, synth
from pytest_wan22.errors import Fail, ServerStartError, Skip, SynthError, Wan22Error
from pytest_wan22.gpu import DeviceInfo
from pytest_wan22.launcher import ServerSpec
from pytest_wan22.records import Environment
from pytest_wan22.servers import (
    Server,
    ServerPool,
    SyntheticModels,
    attached,
    environment,
    launch_command,
    synthetic_models,
    synthetic_rife,
)
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


# --------------------------------------------------------------------------- what a server tells of itself

class _Stats:
    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    def system_stats(self) -> dict[str, Any]:
        return self.stats


def test_a_servers_environment_is_the_gpu_and_what_comfyui_reports() -> None:
    stats = {"system": {"os": "posix", "comfyui_version": "0.8.0", "pytorch_version": "2.9.1+cu128",
                        "python_version": "3.12.3 (main, Jan  1 2025)",
                        "argv": ["main.py", "--port", "8188", "--reserve-vram", "1.0"]},
             "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 5090 : cudaMallocAsync"}, {"name": "cpu"}]}
    env = environment(_Stats(stats), DEVICE, make_profile(TIER), "synthetic:tiny")  # type: ignore[arg-type]
    assert (env.gpu_name, env.gpu_uuid, env.gpu_memory_mib, env.driver, env.cuda) == (
        DEVICE.name, DEVICE.uuid, DEVICE.memory_total_mib, DEVICE.driver, DEVICE.cuda)
    assert (env.torch, env.comfyui, env.python, env.os) == ("2.9.1+cu128", "0.8.0", "3.12.3", "posix")
    assert env.device == "cuda:0 NVIDIA GeForce RTX 5090 : cudaMallocAsync"
    assert env.argv == ("--reserve-vram", "1.0")
    assert (env.tier, env.profile, env.emulated_tier, env.models, env.scale) == (
        "rtx5090", "rtx5090", None, "synthetic:tiny", None)

    emulated = make_profile(TIER, emulate=True, device_memory_mib=143771, device_name="NVIDIA H200")
    cpu = TIERS["cpu"]
    env = environment(_Stats({}), None, emulated, "user")  # type: ignore[arg-type]
    assert (env.gpu_name, env.gpu_uuid, env.gpu_memory_mib, env.driver, env.cuda) == (None,) * 5
    assert (env.torch, env.comfyui, env.python, env.device, env.argv) == (None, None, None, None, ())
    assert env.os == platform.system()
    assert (env.profile, env.emulated_tier) == ("rtx5090@NVIDIA H200", "rtx5090")
    assert environment(_Stats({}), None, make_profile(cpu), "user").scale == cpu.scale_text()  # type: ignore[arg-type]


def test_an_attached_server_is_found_by_its_port_when_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []
    pids: dict[int, int | None] = {8188: 4242}
    monkeypatch.setattr(launcher, "listening_pid", lambda host, port: asked.append((host, port)) or pids.get(port))
    monkeypatch.setattr(launcher, "output_dir_of",
                        lambda pid, argv: tmp_path / f"out-{pid}-{'-'.join(argv)}")
    env = Environment(gpu_name=DEVICE.name)
    server = attached("http://127.0.0.1:8188", env, ["main.py", "--x"], tmp_path)
    assert (server.handle.url, server.handle.pid, server.launcher) == ("http://127.0.0.1:8188", 4242, None)
    assert server.environment is env
    assert server.alive()
    assert server.output_dir == tmp_path / "out-4242-main.py---x"
    assert server.records_dir == tmp_path / "records"
    assert server.unknown == ("attached server: its log is not ours, so offloads, model swaps, OOM retries and "
                              "recompiles are not seen and failures carry no log tail")
    server.stop()  # left alone

    remote = attached("https://comfy.example", env, [], tmp_path)
    assert (remote.handle.pid, remote.output_dir) == (None, None)
    assert remote.unknown.endswith("; no local process listens on that port, so VRAM is the whole device's and "
                                   "the saved video is not read")
    attached("http://comfy.example", env, [], tmp_path)
    assert asked == [("127.0.0.1", 8188), ("comfy.example", 443), ("comfy.example", 80)]


# --------------------------------------------------------------------------- synthetic sets

def test_the_synthetic_set_a_session_runs_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated: list[tuple[Any, ...]] = []

    def ensure_models(python: str, out: Path, preset: str, **kw: Any) -> Any:
        generated.append((python, out, preset, kw))
        return model_set(preset, lora_rank=kw.get("lora_rank", 0))

    monkeypatch.setattr(synth, "ensure_models", ensure_models)
    settings = Settings(rootdir=tmp_path, tiers=TIERS, python="py", models_dir=tmp_path / "m")
    assert synthetic_models(settings, TIER) is None  # the user's models

    models = synthetic_models(replace(settings, synthetic="tiny"), TIER)
    assert models is not None
    assert (models.root, models.preset, models.python, models.device) == (tmp_path / "m" / "tiny", "tiny", "py",
                                                                          "cuda")
    assert generated == [("py", tmp_path / "m" / "tiny", "tiny", {
        "device": "cuda", "log_path": tmp_path / "m" / "tiny" / "generate.log"})]

    cpu = TIERS["cpu"]
    models = synthetic_models(replace(settings, synthetic="a14b"), cpu)
    assert models is not None
    assert (models.device, models.size, models.files) == ("cpu", "full", {})
    assert len(generated) == 1  # a full-size set writes nothing up front: each graph's files before its first run

    count = len(generated)  # attached: the server must have the set already
    models = synthetic_models(replace(settings, synthetic="a14b", url="http://127.0.0.1:8188"), TIER)
    assert models is not None
    assert len(generated) == count
    assert (models.root, models.files) == (tmp_path / "m" / "a14b", {})
    models = synthetic_models(replace(settings, synthetic="tiny", url="http://127.0.0.1:8188"), TIER)
    assert models is not None
    assert models.set == model_set("tiny")

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    models = synthetic_models(replace(settings, synthetic="tiny", models_dir=None, url="http://x"), TIER)
    assert models is not None
    assert models.root == Path.home() / ".cache" / "pytest-wan22" / "models" / "tiny"

    def broken(*args: Any, **kw: Any) -> Any:
        raise SynthError("generation failed: see generate.log")

    monkeypatch.setattr(synth, "ensure_models", broken)
    with pytest.raises(Fail, match=r"^generation failed: see generate\.log$"):
        synthetic_models(replace(settings, synthetic="tiny"), TIER)


def test_a_synthetic_rife_checkpoint_goes_where_no_real_one_lies(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = tmp_path / "custom_nodes"
    for name in ("a-real", "b-ours", "c-rife", "d-other"):
        (nodes / name).mkdir(parents=True)
    for name in ("a-real", "b-ours", "c-rife"):
        marker = nodes / name / synth.RIFE_MARKER
        marker.parent.mkdir(parents=True)
        marker.write_text("")
    for name in ("a-real", "b-ours"):
        real = synth.rife_path(nodes / name, synth.DEFAULT_RIFE_CKPT)
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(b"a checkpoint")
    monkeypatch.setattr(synth, "rife_stamp_matches",  # b-ours: written by the plugin, so kept up to date
                        lambda pack, ckpt: Path(pack).name == "b-ours" and ckpt == synth.DEFAULT_RIFE_CKPT)
    written: list[tuple[Any, ...]] = []
    monkeypatch.setattr(synth, "ensure_rife", lambda python, pack, **kw: written.append((python, pack, kw)))
    synthetic_rife(nodes, "py", tmp_path / "work")
    log = {"log_path": tmp_path / "work" / "rife-synth.log"}
    assert written == [("py", nodes / "b-ours", log), ("py", nodes / "c-rife", log)]

    def broken(*args: Any, **kw: Any) -> Any:
        raise SynthError("no RIFE")

    monkeypatch.setattr(synth, "ensure_rife", broken)
    with pytest.raises(Fail, match=r"^no RIFE$"):
        synthetic_rife(nodes, "py", tmp_path / "work")


def test_a_variation_that_did_not_start_is_named_with_its_flags_and_side(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeWorld(refuse=lambda spec: ServerStartError.exited(1, ["python"], "ImportError: torch"))
    pool = _pool(tmp_path, world, ab=Side(tmp_path / "comfy", "python", (), name="A"))
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    for _ in range(2):
        with pytest.raises(Fail):
            pool.get(("--cache-none", "--lowvram"), "A")
    assert pool.failed["A", ("--cache-none", "--lowvram")] == (
        False, "ComfyUI (side A) with --cache-none --lowvram did not start, so it is not started again for this "
               "test; the failure of an earlier test says why")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "suite.py::test_first[a (b)] (setup)")
    with pytest.raises(Fail):
        pool.get()
    assert pool.failed["B", ()][1].endswith("the failure of suite.py::test_first[a (b)] says why")


# --------------------------------------------------------------------------- what a launch is given

def test_a_launched_server_and_its_spec(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world, host="127.0.0.2", port=8190, startup_timeout=77.0, python="py")
    pool.launch_hook = lambda tier, args, env: env.update(HOOKED=tier.name)
    server = pool.get(("--cache-none", "--lowvram"))
    spec = world.box("work").spec
    assert (spec.comfyui_dir, spec.work_dir, spec.python) == (tmp_path / "comfy", tmp_path / "work", "py")
    assert (spec.host, spec.port, spec.startup_timeout) == ("127.0.0.2", 8190, 77.0)
    assert spec.name == "comfyui-cache-none_lowvram"
    assert spec.env["HOOKED"] == "rtx5090"
    assert (spec.base_directory, spec.custom_nodes) == (None, ())
    assert (server.output_dir, server.records_dir, server.side) == (tmp_path / "work" / "output",
                                                                    tmp_path / "work" / "records", "")
    assert server.places == preflight.launched_places(tmp_path / "comfy", spec.input_dir, None)
    assert server.environment.models == "user"
    assert 0.0 <= server.start_s < 60.0
    assert server.log_start == 0

    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_path.write_text("an earlier server's lines\n")
    pool.stop()
    again = pool.get(("--cache-none", "--lowvram"))
    assert again.log_start == len("an earlier server's lines\n")
    pool.get()
    assert world.box("work").spec.name == "comfyui"


def test_ab_sides_launch_in_their_own_folders_and_b_on_the_sessions_port(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world, port=8190, ab=Side(tmp_path / "current", "py-a", (), name="A"))
    heard: list[tuple[ServerPool, Server | None]] = []
    pool.on_change = lambda p, server: heard.append((p, server))
    a = pool.get(side="A")
    b = pool.get(("--cache-none",))
    assert (a.side, b.side) == ("A", "B")
    assert (world.box("A").spec.port, world.box("B").spec.port) == (0, 8190)  # A: any free port
    assert (world.box("A").spec.python, world.box("A").spec.comfyui_dir) == ("py-a", tmp_path / "current")
    assert a.output_dir == tmp_path / "work" / "A" / "output"
    assert "stop A" not in world.events  # another side's variation leaves A running
    pool.stop()
    assert all(p is pool for p, _ in heard)
    assert heard[-1] == (pool, None)


def test_a_side_that_does_not_start_is_named(tmp_path: Path) -> None:
    def refuse(spec: ServerSpec) -> Wan22Error | None:
        if spec.work_dir.name == "A":
            return ServerStartError.exited(1, ["python"], "ImportError: the `sageattention` package must be "
                                                          "installed first")
        return Wan22Error("cannot create the work folder")

    pool = _pool(tmp_path, FakeWorld(refuse=refuse), ab=Side(tmp_path / "comfy", "py-a", (), name="A"))
    with pytest.raises(Fail, match=r"^A \(current\): ComfyUI exited with code 1"):
        pool.get(side="A")
    with pytest.raises(Skip, match=r"^ComfyUI \(side A\) cannot start with --use-sage-attention --cache-none: "
                                   r"the sageattention package is not installed in py-a$"):
        pool.get(("--use-sage-attention", "--cache-none"), "A")
    with pytest.raises(Fail, match=r"^B \(candidate\): cannot create the work folder$"):
        pool.get()
    plain = _pool(tmp_path / "plain", FakeWorld(refuse=refuse))
    with pytest.raises(Fail, match=r"^cannot create the work folder$"):
        plain.get()
    exits = FakeWorld(refuse=lambda spec: refuse(replace(spec, work_dir=spec.work_dir / "A")))
    plain = _pool(tmp_path / "plain-exit", exits)
    with pytest.raises(Fail, match=r"^ComfyUI exited with code 1 during start"):
        plain.get()


def test_a_side_that_dies_and_does_not_start_again_is_named(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world, ab=Side(tmp_path / "comfy", "python", (), name="A"))
    pool.get(side="A")
    world.box("A").alive, world.restart_fails = False, True
    with pytest.raises(Fail, match=r"^ComfyUI \(side A\) had exited"):
        pool.get(side="A")


def test_a_server_restarted_twice_counts_both_with_its_new_process(tmp_path: Path) -> None:
    world = FakeWorld()
    pool = _pool(tmp_path, world)
    server = pool.get()
    launcher = server.launcher
    assert launcher is not None
    for _ in range(2):
        world.box("work").alive = False
        pool.get()
    assert server.restarts == 2
    assert server.handle is launcher.handle


def test_without_comfyui_nothing_launches(tmp_path: Path) -> None:
    settings = Settings(rootdir=tmp_path, tiers=TIERS)
    pool = ServerPool(settings, make_profile(TIER), tmp_path / "work", launcher=FakeWorld().launcher)
    with pytest.raises(Fail) as failed:
        pool.get()
    assert failed.value.message == ("no ComfyUI to run: pass --wan22-comfyui-dir (ini wan22_comfyui_dir, env "
                                    "WAN22_COMFYUI_DIR) or attach to a running one with --wan22-url")


class _Attached:
    def __init__(self, url: str, stats: dict[str, Any] | None) -> None:
        self.url, self.stats = url, stats

    def __enter__(self) -> _Attached:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def system_stats(self) -> dict[str, Any]:
        if self.stats is None:
            raise Wan22Error("connection refused")
        return self.stats


def test_attach_mode_uses_the_running_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "listening_pid", lambda host, port: 4242)
    monkeypatch.setattr(launcher, "output_dir_of", lambda pid, argv: Path("/out", *argv))
    stats = {"system": {"comfyui_version": "0.8.0", "argv": ["main.py", "--lowvram", 8]}, "devices": []}
    url = "http://127.0.0.1:8188"
    pool = _pool(tmp_path, FakeWorld(), models=_synthetic(tmp_path), url=url)
    pool.client = lambda u: _Attached(u, stats if u == url else None)  # type: ignore[assignment,return-value]
    server = pool.get()
    assert (server.handle.url, server.handle.pid, server.launcher) == (url, 4242, None)
    assert server.output_dir == Path("/out", "main.py", "--lowvram", "8")
    assert server.records_dir == tmp_path / "work" / "records"
    env = server.environment
    assert (env.gpu_name, env.comfyui, env.tier, env.models) == (DEVICE.name, "0.8.0", "rtx5090", "synthetic:tiny")
    assert env.argv == ("--lowvram", "8")

    pool = _pool(tmp_path / "none", FakeWorld(), url=url)
    pool.client = lambda u: _Attached(u, {})  # type: ignore[assignment,return-value]
    monkeypatch.setattr(launcher, "output_dir_of", lambda pid, argv: Path("/out", *argv))
    assert pool.get().output_dir == Path("/out")
    assert pool.get().environment.models == "user"

    pool = _pool(tmp_path / "down", FakeWorld(), url=url)
    pool.client = lambda u: _Attached(u, None)  # type: ignore[assignment,return-value]
    with pytest.raises(Fail) as failed:
        pool.get()
    assert failed.value.message == (f"no ComfyUI answers at {url} (connection refused); start it or fix "
                                    "--wan22-url")
    with pytest.raises(Skip, match=r"^launch flags --cache-none --lowvram need a launched server"):
        _pool(tmp_path / "flags", FakeWorld(), url=url).get(("--cache-none", "--lowvram"))


def test_a_synthetic_launch_prepares_the_set_each_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = _synthetic(tmp_path)
    pack = models.root / "custom_nodes" / "rife"
    (pack / synth.RIFE_MARKER).parent.mkdir(parents=True)
    (pack / synth.RIFE_MARKER).write_text("")
    written: list[tuple[Any, ...]] = []
    monkeypatch.setattr(synth, "ensure_rife", lambda python, pack, **kw: written.append((python, pack, kw)))
    world = FakeWorld()
    pool = _pool(tmp_path, world, models=models, python="py")
    server = pool.get()
    spec = world.box("work").spec
    assert server.environment.models == "synthetic:tiny"
    assert server.places == preflight.launched_places(tmp_path / "comfy", spec.input_dir, ("tiny", models.root))
    assert written == [("py", pack, {"log_path": tmp_path / "work" / "rife-synth.log"})]
    pool.stop()
    pool.get()  # the set's folders and the conditioning are there already
    assert len(written) == 2

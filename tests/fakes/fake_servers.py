"""In-process fakes for the engine (servers.py, rounds.py): a launcher, a client and a run_prompt that answer as a
launched ComfyUI would, without a process or HTTP. One FakeWorld holds every fake server it launched::

    world = FakeWorld()
    pool = ServerPool(settings, profile, work, launcher=world.launcher, client=world.client)
    gate = Gate(state, pool, tier, run_prompt=world.run_prompt)

Each server is a FakeBox named after its work folder ('work' for the session's, 'A' and 'B' in an A/B
session); its `wall` and `outcome` script its rounds, and `world.timeline` lists every run as (box, warm-up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_wan22.client import Release
from pytest_wan22.errors import ServerStartError
from pytest_wan22.launcher import ServerHandle, ServerSpec
from pytest_wan22.records import Neighbour, OutputFile, RunRecord, VramReport
from pytest_wan22.runner import RunContext
from tests.fake_comfyui.catalog import MODEL_COMBOS, Catalog


@dataclass
class FakeBox:
    """One fake ComfyUI process: what it answers and how its rounds go."""

    spec: ServerSpec
    url: str
    alive: bool = True
    starts: int = 1
    comfyui: str = "0.8.0"
    torch: str = "2.9.1+cu128"
    wall: Callable[[int], float] = lambda i: 10.0  # seconds of its i-th run (0-based, warm-ups included)
    outcome: Callable[[int], tuple[str, str]] = lambda i: ("success", "")
    peak_mib: float | None = 6000.0  # None: a run whose VRAM the monitor could not read
    neighbours: tuple[Neighbour, ...] = ()  # other compute processes the VRAM monitor sees during each run
    warnings: tuple[str, ...] = ()  # what each run's log showed ('offload: ...')
    frames: int | None = None  # the frame count of the video each run saves (None: not read)
    runs: int = 0

    @property
    def name(self) -> str:
        """Its work folder's name: 'A' or 'B' for a side, else the session's folder."""
        return self.spec.work_dir.name


@dataclass
class FakeWorld:
    """Every fake server launched, the files they list, and the runs they answered."""

    boxes: list[FakeBox] = field(default_factory=list)
    files: dict[str, set[str]] = field(default_factory=dict)  # models folder -> file names
    inputs: set[str] = field(default_factory=set)
    timeline: list[tuple[str, bool]] = field(default_factory=list)  # (box name, warm-up) per run
    events: list[str] = field(default_factory=list)  # launches, frees, restarts, stops
    restart_fails: bool = False
    pid: int | None = None  # the PID each launched server's handle carries (None: not known)
    queue: dict[str, list[Any]] = field(default_factory=lambda: {"queue_running": [], "queue_pending": []})
    contexts: list[RunContext] = field(default_factory=list)  # the RunContext of every run
    prompts: list[dict[str, Any]] = field(default_factory=list)  # what every run was given, as keywords
    clock: Callable[[], float] = time.time  # each run's start time
    refuse: Callable[[ServerSpec], ServerStartError | None] = lambda spec: None  # a start that fails
    script: Callable[[FakeBox], None] = lambda box: None  # sets up each box as it is launched

    def provide(self, graphs: Iterable[Mapping[str, Any]]) -> None:
        """Make the servers list every model file these graphs name."""
        for graph in graphs:
            for node in graph.values():
                for name, value in (node.get("inputs") or {}).items():
                    folder = MODEL_COMBOS.get((str(node.get("class_type")), name))
                    if folder is not None and isinstance(value, str):
                        self.files.setdefault(folder, set()).add(value)

    def box(self, name: str) -> FakeBox:
        """The last box launched under this name."""
        return [b for b in self.boxes if b.name == name][-1]

    def by_url(self, url: str) -> FakeBox:
        return next(b for b in self.boxes if b.url == url)

    # -- what the pool and the rounds are given
    def launcher(self, spec: ServerSpec) -> FakeLauncher:
        return FakeLauncher(self, spec)

    def client(self, url: str) -> FakeClient:
        return FakeClient(self, url)

    def run_prompt(self, ctx: RunContext, prompt: Mapping[str, Any], *, variant_id: str, workflow: str,
                   seed: int | None, round_index: int = 0, warmup: bool = False) -> RunRecord:
        box = self.by_url(ctx.client.url)  # type: ignore[attr-defined]
        i = box.runs
        box.runs += 1
        self.timeline.append((box.name, warmup))
        self.contexts.append(ctx)
        self.prompts.append({"prompt": prompt, "variant_id": variant_id, "workflow": workflow, "seed": seed,
                             "round_index": round_index})
        outcome, message = box.outcome(i)
        if outcome == "server_died":
            box.alive = False
        return RunRecord(variant_id, workflow, ctx.tier, outcome, message, seed=seed,  # type: ignore[arg-type]
                         round=round_index, warmup=warmup, started_at=self.clock(), wall_s=box.wall(i),
                         outputs=(OutputFile("wan22_00001_.mp4", "", "output", "9", bytes=1000, frames=box.frames),),
                         vram=VramReport(box.peak_mib is not None, peak_process_mib=box.peak_mib,
                                         neighbours=box.neighbours),
                         warnings=box.warnings, environment=ctx.environment)


class FakeLauncher:
    """launcher.ComfyServer's part the pool uses."""

    def __init__(self, world: FakeWorld, spec: ServerSpec) -> None:
        self.world, self.spec = world, spec
        self.handle: ServerHandle | None = None
        self.fake: FakeBox | None = None

    def start(self) -> ServerHandle:
        self.world.events.append(f"start {self.spec.work_dir.name}")
        error = self.world.refuse(self.spec)
        if error is not None:
            raise error
        self.handle = ServerHandle(url=f"http://fake-{len(self.world.boxes)}", pid=self.world.pid)
        self.fake = FakeBox(self.spec, self.handle.url)
        self.world.script(self.fake)
        self.world.boxes.append(self.fake)
        return self.handle

    def alive(self) -> bool:
        return self.fake is not None and self.fake.alive

    def exit_code(self) -> int | None:
        return None if self.alive() else -9

    def ensure_running(self) -> bool:
        assert self.fake is not None
        if self.fake.alive:
            return False
        if self.world.restart_fails:
            raise ServerStartError.exited(1, ["python", "main.py"], "Traceback: CUDA error")
        self.fake.alive = True
        self.fake.starts += 1
        self.handle = ServerHandle(url=self.fake.url, pid=self.world.pid)  # a new process
        self.world.events.append(f"restart {self.fake.name}")
        return True

    def stop(self, grace: float = 10.0) -> None:
        if self.fake is not None:
            self.fake.alive = False
            self.world.events.append(f"stop {self.fake.name}")


class FakeClient:
    """client.ComfyClient's part the pool and the rounds use, answered from the world."""

    def __init__(self, world: FakeWorld, url: str) -> None:
        self.world, self.url = world, url
        self.catalog = Catalog(lambda folder: sorted(world.files.get(folder, ())), lambda: sorted(world.inputs))

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def system_stats(self) -> dict[str, Any]:
        box = self.world.by_url(self.url)
        return {"system": {"os": "linux", "comfyui_version": box.comfyui, "pytorch_version": box.torch,
                           "python_version": "3.12.3 (main)", "argv": ["main.py", *box.spec.args]},
                "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 5090 : cudaMallocAsync"}]}

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        self.world.by_url(self.url)  # a server that was launched
        if node_class is None:
            return self.catalog.all_info()
        return {node_class: self.catalog.info(node_class)} if node_class in self.catalog else {}

    def queue(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.world.queue.items()}

    def clear_queue(self) -> None:
        self.world.events.append("clear queue")
        self.world.queue["queue_pending"] = []

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.world.events.append("interrupt")
        self.world.queue["queue_running"] = []

    def upload_image_bytes(self, name: str, data: bytes, *, overwrite: bool = True) -> str:
        self.world.inputs.add(name)
        return name

    def free_and_wait(self) -> Release:
        self.world.events.append(f"free {self.world.by_url(self.url).name}")
        return Release(True, 0.5, 512.0)

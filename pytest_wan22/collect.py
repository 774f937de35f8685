"""--wan22-workflows: a user's workflow files (API or UI format) as tests, one per file (plus derived variants).

Each file becomes `<file>::test_workflow[<name>]`, run through `wan22_run` like the built-in suite: OOM, VRAM
budget, offload, output video, baseline. An optional sidecar `<name>.wan22.toml` beside the file sets tier
markers, the budget, rounds and variants to derive::

    tiers = ["rtx4090", "h200"]      # markers (default: every tier)
    budget_gib = 22.0                # VRAM budget (default: the tier's)
    rounds = 3                       # timed rounds (default: --wan22-rounds)
    warmup_rounds = 1
    allow_offload = false
    [[variants]]                     # derived variants, each its own test; keys are Variant methods
    label = "5s_480p"
    duration = 5                     # seconds (fps = 16 unless `fps` is given)
    resolution = [832, 480]
    schedule = "lightx2v_4step"      # or {steps = 8, cfg = 1.0, split = 4}
    pass_order = "low_high"
    interpolate = 2
    torch_compile = "inductor"
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .errors import Wan22Error, WorkflowError
from .stash import state_of
from .workflows.convert import convert_ui, is_ui_format
from .workflows.graph import FRONTEND_ONLY, Workflow, read_graph
from .workflows.variant import DEFAULT_FPS, Variant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CASE_KEY", "Sidecar", "WorkflowCase", "derive", "find_workflows", "load_sidecar"]

SIDECAR_SUFFIX = ".wan22.toml"
TEMPLATE_PREFIX = "template:"
_ID_RE = re.compile(r"[^A-Za-z0-9_.+-]+")
_SIDECAR_KEYS = frozenset({"tiers", "budget_gib", "rounds", "warmup_rounds", "allow_offload", "variants"})
_VARIANT_KEYS = frozenset({"label", "duration", "fps", "resolution", "schedule", "pass_order", "interpolate",
                           "torch_compile", "seed"})
_WHERE = "--wan22-workflows (ini wan22_workflows, env WAN22_WORKFLOWS)"


@dataclass(frozen=True)
class Sidecar:
    """Per-workflow settings from NAME.wan22.toml."""

    tiers: tuple[str, ...] = ()
    budget_gib: float | None = None
    rounds: int | None = None
    warmup_rounds: int | None = None
    allow_offload: bool | None = None
    variants: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class WorkflowCase:
    """One collected test: the file, its readable id, the variant it derives (None: the file as it is)."""

    path: Path
    name: str
    test_id: str
    sidecar: Sidecar = field(default_factory=Sidecar)
    derived: Mapping[str, Any] | None = None


CASE_KEY = pytest.StashKey[WorkflowCase]()


def readable_id(path: Path) -> str:
    """A test id from a file name: its stem with anything but letters, digits, '_.+-' replaced."""
    return _ID_RE.sub("_", path.name[: -len(".json")] if path.name.endswith(".json") else path.stem).strip("_")


def _is_workflow(path: Path) -> bool:
    """True for an API- or UI-format workflow; a file that is not JSON at all raises WorkflowError naming it
    (a truncated or conflicted workflow must not drop out of the gate unnoticed). Other JSON files (a
    template index, a notes file) are not workflows and are left out."""
    data = read_graph(path)
    return is_ui_format(data) or (isinstance(data, Mapping) and bool(data) and all(
        isinstance(v, Mapping) and "class_type" in v for v in data.values()))


def template_dirs(python: str) -> list[Path]:
    """The template folders of the comfyui_workflow_templates* packages in the interpreter under test."""
    code = ("import importlib.util, json, pkgutil\n"
            "out = []\n"
            "for m in pkgutil.iter_modules():\n"
            "    if m.name.startswith('comfyui_workflow_templates'):\n"
            "        spec = importlib.util.find_spec(m.name)\n"
            "        for p in (spec.submodule_search_locations or []) if spec else []:\n"
            "            out.append(p + '/templates')\n"
            "print(json.dumps(out))\n")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return [Path(p) for p in json.loads(done.stdout) if Path(p).is_dir()]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise WorkflowError(f"cannot list the workflow templates of {python}: {exc}; set --wan22-python to "
                            "ComfyUI's interpreter") from exc


def find_workflows(spec: str, rootdir: Path, python: str) -> list[Path]:
    """The workflow files one --wan22-workflows entry names: a file, a folder's *.json, or template:GLOB."""
    if spec.startswith(TEMPLATE_PREFIX):
        pattern = spec[len(TEMPLATE_PREFIX):] or "*"
        pattern = pattern if pattern.endswith(".json") else pattern + ".json"
        dirs = template_dirs(python)
        found = sorted({p for d in dirs for p in d.glob(pattern) if p.is_file()}, key=lambda p: p.name)
        if not found:
            where = ", ".join(str(d) for d in dirs) or f"no comfyui_workflow_templates package in {python}"
            raise WorkflowError(f"{_WHERE} {spec!r}: no template matches {pattern!r} ({where}); template names "
                                "look like video_wan2_2_14B_i2v, video_wan2_2_5B_ti2v")
        return found
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else rootdir / path
    if path.is_dir():
        try:
            return sorted(p for p in path.glob("*.json") if _is_workflow(p))
        except WorkflowError as exc:
            raise WorkflowError(f"{_WHERE} {spec!r}: {exc}; or move it out of the folder") from None
    if path.is_file():
        return [path]
    raise WorkflowError(f"{_WHERE} {spec!r}: {path} does not exist; give a workflow file, a folder of them or "
                        "template:GLOB")


def load_sidecar(path: Path, tiers: Mapping[str, Any]) -> Sidecar:
    """NAME.wan22.toml beside the workflow, checked; an empty Sidecar when there is none."""
    side = path.with_name(readable_stem(path) + SIDECAR_SUFFIX)
    if not side.is_file():
        return Sidecar()
    try:
        data = tomllib.loads(side.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WorkflowError(f"{side}: {exc}; fix the TOML") from exc
    unknown = set(data) - _SIDECAR_KEYS
    if unknown:
        raise WorkflowError(f"{side}: unknown key(s) {', '.join(sorted(unknown))}; use "
                            f"{', '.join(sorted(_SIDECAR_KEYS))}")
    names = data.get("tiers", [])
    if not isinstance(names, list) or any(t not in tiers for t in names):
        raise WorkflowError(f"{side}: tiers = {names!r} must list tier names from the tier table "
                            f"({', '.join(tiers)})")
    variants = data.get("variants", [])
    for v in variants:
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise WorkflowError(f"{side}: [[variants]] key(s) {', '.join(sorted(bad))} are unknown; use "
                                f"{', '.join(sorted(_VARIANT_KEYS))}")
    return Sidecar(tuple(names), data.get("budget_gib"), data.get("rounds"), data.get("warmup_rounds"),
                   data.get("allow_offload"), tuple(variants))


def readable_stem(path: Path) -> str:
    """The file name without .json."""
    return path.name[: -len(".json")] if path.name.endswith(".json") else path.stem


def variant_label(spec: Mapping[str, Any], index: int) -> str:
    """The id part of a derived variant: its label, or its keys and values."""
    if "label" in spec:
        return _ID_RE.sub("_", str(spec["label"]))
    parts = [f"{k}{'x'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in spec.items()
             if not isinstance(v, Mapping)]
    return _ID_RE.sub("_", "_".join(parts)) or f"variant{index}"


def derive(variant: Variant, spec: Mapping[str, Any]) -> Variant:
    """Apply a sidecar [[variants]] entry's builder methods."""
    v = variant
    if "pass_order" in spec:
        v = v.pass_order(spec["pass_order"])
    if "duration" in spec:
        v = v.duration(spec["duration"], float(spec.get("fps", DEFAULT_FPS)))
    if "resolution" in spec:
        width, height = spec["resolution"]
        v = v.resolution(int(width), int(height))
    schedule = spec.get("schedule")
    if isinstance(schedule, str):
        v = v.schedule(schedule)
    elif isinstance(schedule, Mapping):
        v = v.schedule(**{k: schedule[k] for k in ("steps", "cfg", "split") if k in schedule})
    if "interpolate" in spec:
        v = v.interpolate(int(spec["interpolate"]))
    if "torch_compile" in spec:
        v = v.torch_compile(str(spec["torch_compile"]))
    if "label" in spec:
        v = v.label(variant_label(spec, 0))
    return v


def cases(path: Path, sidecar: Sidecar) -> Iterator[WorkflowCase]:
    """The file as it is, then each derived variant."""
    base = readable_id(path)
    yield WorkflowCase(path, readable_stem(path), base, sidecar)
    for i, spec in enumerate(sidecar.variants):
        yield WorkflowCase(path, readable_stem(path), f"{base}-{variant_label(spec, i)}", sidecar, spec)


# --------------------------------------------------------------------------- pytest side


class WorkflowFile(pytest.File):
    """A workflow JSON file given with --wan22-workflows."""

    def collect(self) -> Iterator[pytest.Item]:
        settings = state_of(self.config).settings
        try:
            sidecar = load_sidecar(self.path, settings.tiers)
        except Wan22Error as exc:
            raise pytest.UsageError(str(exc)) from None
        for case in cases(self.path, sidecar):
            item = pytest.Function.from_parent(self, name=f"test_workflow[{case.test_id}]", callobj=run_workflow)
            item.stash[CASE_KEY] = case
            for tier in case.sidecar.tiers or tuple(settings.tiers):
                item.add_marker(tier)
            if case.sidecar.budget_gib is not None:
                item.add_marker(pytest.mark.wan22_budget(case.sidecar.budget_gib))
            yield item


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Append one test per workflow file (before tier skips and -m selection see the items)."""
    settings = state_of(config).settings
    if not settings.workflows:
        return
    seen: set[Path] = set()
    for spec in settings.workflows:
        try:
            paths = find_workflows(spec, settings.rootdir, settings.python)
        except Wan22Error as exc:
            raise pytest.UsageError(str(exc)) from None
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            try:
                nodeid = path.relative_to(config.rootpath).as_posix()
            except ValueError:  # outside the rootdir: the whole path
                nodeid = path.as_posix()
            found: list[pytest.Item | pytest.Collector] = list(
                WorkflowFile.from_parent(session, path=path, nodeid=nodeid).collect())
            items.extend(i for i in found if isinstance(i, pytest.Item))
            # reported as collected, so pytest's "collected N items" (and xdist's count) include them
            config.hook.pytest_collectreport(report=pytest.CollectReport(nodeid, "passed", None, found))


_CUDA = re.compile(r"^cuda(:\d+)?$")
_SUBGRAPH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _active_ui_nodes(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The nodes of a UI-format workflow and its subgraphs that run (neither muted nor bypassed)."""
    nodes = list(data.get("nodes") or [])
    for sub in (data.get("definitions") or {}).get("subgraphs") or []:
        nodes += sub.get("nodes") or []
    return [n for n in nodes if isinstance(n, Mapping) and n.get("mode", 0) == 0]


def gpu_pinned(data: Any) -> list[tuple[str, str, str]]:
    """(node id, class, value) of the active nodes of a workflow (API or UI format, subgraphs too) that pin
    themselves to a GPU: an input or widget value 'cuda' or 'cuda:N'."""
    found: list[tuple[str, str, str]] = []
    if is_ui_format(data):
        for node in _active_ui_nodes(data):
            values = node.get("widgets_values")
            values = list(values.values()) if isinstance(values, Mapping) else values or []
            found += [(str(node.get("id")), str(node.get("type")), v) for v in values
                      if isinstance(v, str) and _CUDA.match(v)]
    elif isinstance(data, Mapping):
        for node_id, node in data.items():
            if isinstance(node, Mapping):
                found += [(str(node_id), str(node.get("class_type")), v) for v in (node.get("inputs") or {}).values()
                          if isinstance(v, str) and _CUDA.match(v)]
    return found


def node_classes(data: Any) -> set[str]:
    """The node classes a workflow runs (a UI file's active nodes, subgraph instances and frontend-only nodes
    left out)."""
    if is_ui_format(data):
        return {str(n.get("type")) for n in _active_ui_nodes(data)
                if str(n.get("type")) not in FRONTEND_ONLY and not _SUBGRAPH_ID.match(str(n.get("type")))}
    return {str(n.get("class_type")) for n in data.values() if isinstance(n, Mapping)} if isinstance(
        data, Mapping) else set()


def cpu_refusal(name: str, tier: str, pinned: list[tuple[str, str, str]], missing: list[str]) -> str:
    """Why a workflow cannot run on a tier without a GPU: the nodes pinned to one, and the node packs missing."""
    from .preflight import node_pack

    nodes = "; ".join(f"node {i} {cls}{f' ({node_pack(cls)})' if node_pack(cls) else ''} is set to device {v!r}"
                      for i, cls, v in pinned)
    text = f"{name} cannot run on the {tier} tier, which has no GPU: {nodes}"
    if missing:
        packs: dict[str, list[str]] = {}
        for cls in missing:
            packs.setdefault(node_pack(cls) or "an unknown pack", []).append(cls)
        text += (". It also needs node packs this ComfyUI lacks (they download their own weights at first use): "
                 + "; ".join(f"{pack}: {', '.join(sorted(set(c)))}" for pack, c in sorted(packs.items())))
    return text


def load_case(case: WorkflowCase, object_info: Callable[[], Mapping[str, Any]]) -> Variant:
    """The case's Variant: API files as they are, UI files converted against the server's object_info.

    A conversion that leaves something undecided raises WorkflowError naming each node, input and reason,
    and what the server lacks (node packs with their repositories, model files with their folders).
    """
    data = read_graph(case.path)
    if is_ui_format(data):
        info = object_info()
        conversion = convert_ui(data, info)
        if conversion.issues:
            from . import preflight

            lacks = preflight.find_problems(conversion.prompt, info)
            raise WorkflowError(
                f"{case.path}: the UI-format workflow cannot be converted to API format without guessing "
                f"({len(conversion.issues)} issue(s)); nothing was run:\n" + conversion.report()
                + ("\nwhat the server lacks for the part that converts:\n" + preflight.format_problems(lacks)
                   if lacks else ""))
        workflow = Workflow(conversion.prompt, name=case.name, source=case.path)
    else:
        workflow = Workflow(data, name=case.name, source=case.path)
    variant = Variant(workflow)
    return derive(variant, case.derived) if case.derived is not None else variant


def run_workflow(request: pytest.FixtureRequest, wan22_run: Callable[..., Any], wan22_servers: Any,
                 wan22_tier: Any) -> None:
    """Run one workflow file (or a variant its sidecar derives) through wan22_run, which checks the graph as the
    file has it where the server lacks one of its nodes, then the graph as the tier runs it. On a tier without a
    GPU, a file that pins a node to one is skipped, with the nodes and the node packs it needs."""
    from .client import ComfyClient

    case = request.node.stash[CASE_KEY]
    server = wan22_servers.get()

    def object_info() -> Mapping[str, Any]:
        if not server.object_info:
            with ComfyClient(server.handle.url) as client:
                server.object_info = client.object_info()
        return dict(server.object_info)

    if not wan22_tier.is_gpu:
        data = read_graph(case.path)
        pinned = gpu_pinned(data)
        if pinned:
            missing = sorted(c for c in node_classes(data) if c not in object_info())
            pytest.skip(cpu_refusal(case.name, wan22_tier.name, pinned, missing))
    try:
        variant = load_case(case, object_info)
        variant.build()  # a builder method that does not apply fails here, before any run
    except Wan22Error as exc:  # from None: the error is the message, not a cause to print before it
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    side = case.sidecar
    wan22_run(variant, rounds=side.rounds, warmup_rounds=side.warmup_rounds, budget_gib=side.budget_gib,
              allow_offload=side.allow_offload)

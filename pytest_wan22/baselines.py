"""Baseline files: baselines/<tier>/<workflow>.json, read freely, written atomically and only on request."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import Summary
from .errors import BaselineError
from .records import Environment, from_jsonable, to_jsonable

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Baseline:
    """One workflow's baselines on one tier, with the machine they were recorded on."""

    tier: str
    workflow: str
    machine: Environment = field(default_factory=Environment)
    variants: Mapping[str, Summary] = field(default_factory=dict)


class BaselineStore:
    """Reads and writes baselines/<tier>/<workflow>.json; knows nothing of how results are judged."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tier: str, workflow: str) -> Path:
        """The file that holds a workflow's baselines on a tier."""
        return self.root / tier / f"{workflow}.json"

    def load(self, tier: str, workflow: str) -> Baseline | None:
        """The stored baseline, or None when there is none yet."""
        path = self.path(tier, workflow)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION:
                raise BaselineError(f"{path} has schema_version {data.get('schema_version')!r}, this plugin "
                                    f"reads {SCHEMA_VERSION}; re-record it with --wan22-update-baselines")
            return Baseline(
                tier=data["tier"], workflow=data["workflow"],
                machine=from_jsonable(Environment, data.get("machine") or {}),
                variants={k: from_jsonable(Summary, v) for k, v in (data.get("variants") or {}).items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise BaselineError(f"{path} is not a readable baseline file ({exc}); restore it from version "
                                "control or re-record it with --wan22-update-baselines") from exc

    def save(self, baseline: Baseline) -> Path:
        """Write atomically (temp file, fsync, rename): the old file stays whole if anything fails."""
        path = self.path(baseline.tier, baseline.workflow)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "tier": baseline.tier, "workflow": baseline.workflow,
            "machine": to_jsonable(baseline.machine),
            "variants": {k: to_jsonable(v) for k, v in sorted(baseline.variants.items())},
        }
        text = json.dumps(payload, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def update(self, tier: str, workflow: str, machine: Environment, summaries: Mapping[str, Summary]) -> Path:
        """Merge new summaries into the stored file (other variants are kept) and save it."""
        old = self.load(tier, workflow)
        variants = dict(old.variants) if old else {}
        variants.update(summaries)
        return self.save(Baseline(tier, workflow, machine, variants))


def machine_mismatch(stored: Environment, current: Environment) -> str | None:
    """Why a baseline cannot be compared on this machine (another GPU), or None."""
    if stored.gpu_name and current.gpu_name and stored.gpu_name != current.gpu_name:
        return (f"baseline recorded on {stored.gpu_name}, this run is on {current.gpu_name}; record this GPU's "
                "own baseline with --wan22-update-baselines or point --wan22-baselines-dir elsewhere")
    if stored.models and current.models and stored.models != current.models:
        return (f"baseline recorded with {stored.models} models, this run uses {current.models}; compare like "
                "with like (--wan22-synthetic) or re-record with --wan22-update-baselines")
    return None


def version_changes(stored: Environment, current: Environment) -> list[str]:
    """What changed since the baseline among driver, CUDA, torch and ComfyUI: what the gate is about."""
    out = []
    for name in ("driver", "cuda", "torch", "comfyui", "python"):
        a, b = getattr(stored, name), getattr(current, name)
        if a and b and a != b:
            out.append(f"{name} {a} -> {b}")
    return out

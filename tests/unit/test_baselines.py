from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_wan22.baselines import Baseline, BaselineStore, machine_mismatch, version_changes
from pytest_wan22.compare import Summary
from pytest_wan22.errors import BaselineError
from pytest_wan22.records import Environment

ENV = Environment(gpu_name="NVIDIA H200", driver="580.159.04", torch="2.11.0", comfyui="0.8.0", models="user")


def test_round_trip_and_merge(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    a = Summary("high_low-5s", 3, (15.3, 15.4, 15.3), (2.68, 2.69), 40800.0, "abc")
    store.update("h200", "wan22_i2v_a14b", ENV, {a.variant_id: a})
    b = Summary("low_high-5s", 3, (15.6,), (2.68,), 40900.0)
    path = store.update("h200", "wan22_i2v_a14b", ENV, {b.variant_id: b})
    assert path == tmp_path / "h200" / "wan22_i2v_a14b.json"
    loaded = store.load("h200", "wan22_i2v_a14b")
    assert loaded is not None
    assert loaded.variants == {a.variant_id: a, b.variant_id: b}
    assert loaded.machine == ENV


def test_missing_file_is_none_and_bad_file_names_the_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    assert store.load("h200", "w") is None
    p = store.path("h200", "w")
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with pytest.raises(BaselineError, match="--wan22-update-baselines"):
        store.load("h200", "w")
    p.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(BaselineError, match="schema_version 99"):
        store.load("h200", "w")


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)
    s = Summary("v", 1, (1.0,), (), None)
    path = store.save(Baseline("cpu", "w", ENV, {"v": s}))
    before = path.read_text()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(Baseline("cpu", "w", ENV, {"v": Summary("v", 1, (2.0,), (), None)}))
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_machine_checks() -> None:
    other = Environment(gpu_name="NVIDIA GeForce RTX 5090", driver="590.1", torch="2.12.0", models="user")
    assert "RTX 5090" in (machine_mismatch(ENV, other) or "")
    assert machine_mismatch(ENV, ENV) is None
    synthetic = Environment(gpu_name="NVIDIA H200", models="synthetic:a14b")
    assert "synthetic:a14b" in (machine_mismatch(ENV, synthetic) or "")
    newer = Environment(gpu_name="NVIDIA H200", driver="590.1", torch="2.12.0", comfyui="0.8.0")
    assert version_changes(ENV, newer) == ["driver 580.159.04 -> 590.1", "torch 2.11.0 -> 2.12.0"]

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_wan22.baselines import (
    HISTORY_LENGTH,
    SCHEMA_VERSION,
    Baseline,
    BaselineStore,
    Entry,
    Session,
    drift,
    machine_mismatch,
    same_gpu,
    session_of,
    session_spread,
    version_changes,
)
from pytest_wan22.compare import Summary, tolerances
from pytest_wan22.errors import BaselineError
from pytest_wan22.records import Environment

REPO = Path(__file__).resolve().parents[2]
ENV = Environment(gpu_name="NVIDIA H200", gpu_uuid="GPU-1", driver="580.159.04", torch="2.11.0", comfyui="0.8.0",
                  models="user", gpu_state={"sm_clock_mhz": 1980.0})


def _summary(variant: str = "v", step: float = 2.7, machine: Environment | None = ENV, at: float = 1.0) -> Summary:
    return Summary(variant, 3, {"step": ((step, step + 0.01), (step,), (step,)), "wall": ((15.3,), (15.4,), (15.3,)),
                                "vram": ((40800.0,),)}, "abc", machine=machine, recorded_at=at)


def test_round_trip_merge_and_history(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    a = _summary("high_low-5s")
    store.update("h200", "wan22_i2v_a14b", ENV, {a.variant_id: a})
    b = _summary("low_high-5s", machine=None)  # gets the machine passed in
    path = store.update("h200", "wan22_i2v_a14b", ENV, {b.variant_id: b})
    assert path == tmp_path / "h200" / "wan22_i2v_a14b.json"
    loaded = BaselineStore(tmp_path).load("h200", "wan22_i2v_a14b")
    assert loaded is not None
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.variants == {a.variant_id: a, b.variant_id: replace(b, machine=ENV)}
    assert loaded.machine_of("high_low-5s") == ENV
    assert loaded.machine_of("high_low-5s").gpu_state == {"sm_clock_mhz": 1980.0}  # clocks at record time
    assert loaded.entries["high_low-5s"].history == (session_of(a),)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert data["variants"]["high_low-5s"]["summary"]["samples"]["step"] == [[2.7, 2.71], [2.7], [2.7]]
    assert '[2.7, 2.71]' in path.read_text()  # a round's samples on one line


def test_history_is_bounded_and_keeps_the_latest(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    for i in range(HISTORY_LENGTH + 5):
        store.update("h200", "w", ENV, {"v": _summary(step=2.7 + i / 1000, at=float(i))})
    entry = BaselineStore(tmp_path).load("h200", "w")
    assert entry is not None
    history = entry.entries["v"].history
    assert len(history) == HISTORY_LENGTH
    assert [s.recorded_at for s in history] == [float(i) for i in range(5, HISTORY_LENGTH + 5)]
    assert entry.variants["v"].recorded_at == HISTORY_LENGTH + 4


def test_session_of_keeps_medians_versions_and_gpu() -> None:
    s = session_of(_summary())
    assert s.medians == {"step": 2.7, "wall": 15.3, "vram": 40800.0}
    assert s.versions == {"driver": "580.159.04", "torch": "2.11.0", "comfyui": "0.8.0"}
    assert (s.gpu_uuid, s.rounds, s.recorded_at) == ("GPU-1", 3, 1.0)


V1 = {
    "schema_version": 1, "tier": "h200", "workflow": "wan22_i2v_a14b",
    "machine": {"gpu_name": "NVIDIA H200", "gpu_uuid": "GPU-192a", "driver": "580.159.04", "torch": "2.11.0+cu130",
                "gpu_state": {"sm_clock_mhz": 1980.0}},
    "variants": {"high_low-5s": {"variant_id": "high_low-5s", "rounds": 2, "wall_s": [15.25, 15.24],
                                 "step_s": [2.657, 2.662, 2.660, 2.661], "peak_vram_mib": 81654.0,
                                 "digest": "64a1", "outcome": "success"}},
}


def test_schema_1_files_are_migrated_and_rewritten_as_2(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.path("h200", "wan22_i2v_a14b")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(V1))
    old = store.load("h200", "wan22_i2v_a14b")
    assert old is not None
    assert old.schema_version == 1
    s = old.variants["high_low-5s"]
    assert s.samples == {"wall": ((15.25,), (15.24,)), "step": ((2.657, 2.662), (2.660, 2.661)),
                         "vram": ((81654.0,),)}
    assert s.machine is not None
    assert s.machine.gpu_uuid == "GPU-192a"
    assert (s.rounds, s.digest) == (2, "64a1")
    store.update("h200", "wan22_i2v_a14b", ENV, {"other": _summary("other")})
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert sorted(data["variants"]) == ["high_low-5s", "other"]  # the migrated variant is kept


def test_the_repositorys_own_baseline_file_reads() -> None:
    files = sorted((REPO / "baselines").glob("*/*.json"))
    assert files
    store = BaselineStore(REPO / "baselines")
    for f in files:
        b = store.load(f.parent.name, f.stem)
        assert b is not None
        assert all(s.rounds and s.samples.get("step") for s in b.variants.values())


def _write(store: BaselineStore, text: str, tier: str = "h200", workflow: str = "w") -> Path:
    path = store.path(tier, workflow)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = json.dumps({"schema_version": 2, "tier": "h200", "workflow": "w", "variants": {}})


@pytest.mark.parametrize(("text", "kind", "cause"), [
    ("{not json", "corrupt", "not valid JSON"),
    (GOOD[: len(GOOD) // 2], "corrupt", "not valid JSON"),  # truncated
    ("<<<<<<< HEAD\n" + GOOD + "\n=======\n" + GOOD + "\n>>>>>>> other\n", "corrupt", "merge conflict"),
    (json.dumps({"schema_version": 2, "tier": "h200", "workflow": "w", "variants": []}), "corrupt", "malformed"),
    (json.dumps({"schema_version": 2, "tier": "h200", "workflow": "w", "variants": {"v": {"history": []}}}),
     "corrupt", "malformed"),
    (json.dumps({"schema_version": 99, "tier": "h200", "workflow": "w"}), "foreign", "schema_version 99"),
    (json.dumps({"schema_version": 2, "tier": "rtx4090", "workflow": "w", "variants": {}}), "foreign",
     "tier 'rtx4090'"),
    (json.dumps({"schema_version": 2, "tier": "h200", "workflow": "other", "variants": {}}), "foreign",
     "workflow 'other'"),
    (json.dumps({"name": "package"}), "foreign", "not a pytest-wan22 baseline"),
    (json.dumps([1, 2]), "foreign", "not a pytest-wan22 baseline"),
])
def test_unusable_files_are_told_apart(tmp_path: Path, text: str, kind: str, cause: str) -> None:
    store = BaselineStore(tmp_path)
    path = _write(store, text)
    (problem,) = store.problems("h200")
    assert (problem.path, problem.kind) == (path, kind)
    assert cause in problem.reason
    said = "has an unresolved git" if cause == "merge conflict" else f"is {kind}: .*{cause.split()[0]}"
    with pytest.raises(BaselineError, match=f"{path}.* {said}"):
        store.load("h200", "w")


def test_check_at_session_start_stops_on_a_corrupt_file_with_the_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    _write(store, GOOD)
    bad = _write(store, "{trunc", workflow="x")
    with pytest.raises(BaselineError, match=r"x\.json is corrupt: not valid JSON.*--wan22-update-baselines"):
        store.check("h200")
    assert bad.read_text() == "{trunc"  # nothing touched without the update flag
    assert store.check("rtx4090") == []  # another tier's folder is not this session's business


def test_check_with_update_sets_a_corrupt_file_aside_but_never_a_foreign_one(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    bad = _write(store, "{trunc", workflow="x")
    (line,) = store.check("h200", update=True)
    kept = [p for p in bad.parent.iterdir() if p.name.startswith("x.json.corrupt-")]
    assert len(kept) == 1
    assert kept[0].read_text() == "{trunc"
    assert not bad.exists()
    assert kept[0].name in line
    assert "rewritten from this run" in line
    assert store.set_aside == [(bad, kept[0])]
    _write(store, json.dumps({"schema_version": 7, "tier": "h200", "workflow": "y"}), workflow="y")
    with pytest.raises(BaselineError, match="is foreign"):
        store.check("h200", update=True)


def test_update_over_a_corrupt_file_keeps_it_aside_and_writes_the_new(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = _write(store, "{trunc")
    store.update("h200", "w", ENV, {"v": _summary()})
    loaded = store.load("h200", "w")
    assert loaded is not None
    assert list(loaded.variants) == ["v"]
    ((old, kept),) = store.set_aside
    assert old == path
    assert kept.read_text() == "{trunc"
    _write(store, json.dumps({"schema_version": 7, "tier": "h200", "workflow": "w"}))
    with pytest.raises(BaselineError, match="foreign"):
        store.update("h200", "w", ENV, {"v": _summary()})


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(Baseline("cpu", "w", {"v": Entry(_summary())}))
    before = path.read_text()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(Baseline("cpu", "w", {"v": Entry(_summary(step=3.0))}))
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_load_is_read_once_until_the_file_changes(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.update("h200", "w", ENV, {"v": _summary()})
    first = store.load("h200", "w")
    assert store.load("h200", "w") is first
    BaselineStore(tmp_path).update("h200", "w", ENV, {"u": _summary("u")})  # another writer
    again = store.load("h200", "w")
    assert again is not None
    assert sorted(again.variants) == ["u", "v"]


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pytest_wan22.baselines import BaselineStore
    from pytest_wan22.compare import Summary
    from pytest_wan22.records import Environment

    root, name, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = BaselineStore(root)
    for i in range(n):
        s = Summary(f"{name}-{i}", 1, {"wall": ((float(i),),)})
        store.update("h200", "w", Environment(), {s.variant_id: s})
""")


def test_two_sessions_updating_one_file_at_once_both_land(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "b"), name, "25"], env=env)
             for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    loaded = BaselineStore(tmp_path / "b").load("h200", "w")
    assert loaded is not None
    assert sorted(loaded.variants) == sorted(f"{n}-{i}" for n in "ab" for i in range(25))


def test_machine_checks() -> None:
    other = Environment(gpu_name="NVIDIA GeForce RTX 5090", driver="590.1", torch="2.12.0", models="user")
    assert "RTX 5090" in (machine_mismatch(ENV, other) or "")
    assert machine_mismatch(ENV, ENV) is None
    synthetic = Environment(gpu_name="NVIDIA H200", models="synthetic:a14b")
    assert "synthetic:a14b" in (machine_mismatch(ENV, synthetic) or "")
    newer = Environment(gpu_name="NVIDIA H200", driver="590.1", torch="2.12.0", comfyui="0.8.0")
    assert version_changes(ENV, newer) == ["driver 580.159.04 -> 590.1", "torch 2.11.0 -> 2.12.0"]
    assert same_gpu(ENV, ENV)
    assert not same_gpu(ENV, replace(ENV, gpu_uuid="GPU-2"))
    assert same_gpu(ENV, replace(ENV, gpu_uuid=None))  # unknown: nothing to widen the band for


def _history(values: list[float], gpu: str = "GPU-1", torch_from: int | None = None) -> list[Session]:
    return [Session(1.7e9 + i * 86400, 3, {"step": v, "wall": 15.0}, gpu,
                    {"torch": "2.12.0" if torch_from is not None and i >= torch_from else "2.11.0"})
            for i, v in enumerate(values)]


def test_drift_names_the_shift_its_date_and_what_changed() -> None:
    values = [2.70, 2.71, 2.70, 2.69, 2.70, 2.71, 2.79, 2.80, 2.79, 2.80, 2.81]
    (line,) = drift(_history(values, torch_from=6), None, tolerances([]))
    assert line.startswith("step shifted +3.6% from 2023-11-20 on (torch 2.11.0 -> 2.12.0)")
    assert "across 11 sessions of this GPU" in line


def test_drift_is_quiet_on_noise_small_shifts_and_other_gpus() -> None:
    tols = tolerances([])
    assert drift(_history([2.70, 2.71, 2.70, 2.69, 2.70, 2.71, 2.70, 2.71]), None, tols) == []
    small = [2.700, 2.701, 2.700, 2.701, 2.711, 2.712, 2.711, 2.712]  # +0.4%: real, under the 0.7% tolerance
    assert drift(_history(small), None, tols) == []
    assert drift(_history(small), None, tolerances(["step:0.3%"]))
    mixed = _history([2.70] * 4, gpu="GPU-0") + _history([2.80] * 4)  # another GPU's sessions are left out
    assert drift(mixed, None, tols) == []


def test_drift_counts_this_session_last() -> None:
    history = _history([2.70, 2.71, 2.70, 2.79, 2.80])
    current = Summary("v", 3, {"step": ((2.80,), (2.81,), (2.80,))}, machine=Environment(gpu_uuid="GPU-1"))
    (line,) = drift(history, current, tolerances([]))
    assert "across 6 sessions" in line


def test_session_spread_from_the_history_of_one_gpu() -> None:
    values = [2.70, 2.727, 2.70, 2.727, 2.70]  # sessions alternating by 1%
    spread = session_spread(_history(values))
    assert spread["step"] == pytest.approx(math.sqrt((0.01**2 + 0.0099**2 * 3) / 4 / 2), rel=0.02)
    assert "wall" not in spread  # no wander at all
    assert session_spread(_history(values[:4])) == {}  # too few sessions to trust
    other = _history([2.9, 3.1, 2.8, 3.2, 2.9], gpu="GPU-0") + _history([2.70, 2.70, 2.70, 2.70, 2.71])
    assert session_spread(other)["step"] < 0.003  # the other GPU's sessions are left out
    shifted = session_spread(_history([2.70, 2.70, 2.70, 2.80, 2.80, 2.80]))["step"]  # a level shift counts once
    assert shifted == pytest.approx(math.sqrt((2.80 / 2.70 - 1) ** 2 / 5 / 2), rel=0.01)


def test_session_spread_leaves_out_what_the_baselines_rounds_explain() -> None:
    values = [2.70, 2.727, 2.70, 2.727, 2.70]
    noisy = Summary("v", 3, {"step": ((2.6,), (2.7,), (2.8,))})
    assert session_spread(_history(values), noisy) == {}  # rounds that scatter this much explain it all


# --- edges found by mutation testing ----------------------------------------------------------------------


def test_session_of_rounds_medians_to_six_places_and_unknown_variants_have_no_machine() -> None:
    s = Summary("v", 1, {"step": ((2.12345678,),)})
    assert session_of(s).medians == {"step": 2.123457}
    assert Baseline("h200", "w").machine_of("missing") == Environment()


def test_a_v2_variant_filed_under_another_name_is_corrupt_and_reasons_are_exact(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    summary = json.loads(json.dumps({"variant_id": "other", "rounds": 1, "samples": {}}))
    _write(store, json.dumps({"schema_version": 2, "tier": "h200", "workflow": "w",
                              "variants": {"v": {"summary": summary}}}))
    (p,) = store.problems("h200")
    assert (p.kind, p.reason) == ("corrupt", "malformed (TypeError: variant 'v' is malformed)")
    _write(store, json.dumps({"schema_version": 2, "tier": "h200", "workflow": "w", "variants": []}))
    assert store.problems("h200")[0].reason == "malformed (TypeError: variants is not an object)"
    _write(store, json.dumps({"schema_version": 99, "tier": "h200", "workflow": "w"}))
    assert store.problems("h200")[0].reason == ("schema_version 99; this plugin reads 1, 2 "
                                                "(a newer pytest-wan22 wrote it?)")
    _write(store, json.dumps({"name": "package"}))
    assert store.problems("h200")[0].reason == "not a pytest-wan22 baseline file (no schema_version)"
    store.path("h200", "w").write_bytes(b'{"schema_version": 2, "tier": "\xff"}')
    (p,) = store.problems("h200")
    assert p.kind == "corrupt"
    assert p.reason.startswith("not UTF-8 text (")
    with pytest.raises(BaselineError, match="is corrupt: not UTF-8.*restore it from version control "
                       r"\(git checkout -- FILE\), or rerun with --wan22-update-baselines, which keeps it aside "
                       "and records the variants again"):
        store.load("h200", "w")
    _write(store, json.dumps({"name": "package"}))
    with pytest.raises(BaselineError, match=r"is foreign: .*; move it where it belongs or out of the baselines "
                       r"folder \(--wan22-baselines-dir\), or upgrade pytest-wan22 if a newer one wrote it$"):
        store.load("h200", "w")
    _write(store, GOOD)
    loaded = store.load("h200", "w")
    assert loaded is not None
    assert (loaded.tier, loaded.workflow) == ("h200", "w")


def test_schema_1_steps_that_do_not_split_into_rounds_stay_one_a_round_and_defaults_fill_in(tmp_path: Path) -> None:
    v1 = json.loads(json.dumps(V1))
    v1["variants"]["high_low-5s"] = {"rounds": 3, "step_s": [2.6, 2.7, 2.6, 2.7, 2.6, 2.7, 2.6]}
    store = BaselineStore(tmp_path)
    _write(store, json.dumps(v1), workflow="wan22_i2v_a14b")
    old = store.load("h200", "wan22_i2v_a14b")
    assert old is not None
    entry = old.entries["high_low-5s"]
    assert entry.summary.samples == {"step": tuple((x,) for x in (2.6, 2.7, 2.6, 2.7, 2.6, 2.7, 2.6))}
    assert (entry.summary.digest, entry.summary.outcome) == ("", "success")
    assert entry.history == (session_of(entry.summary),)


def test_files_are_indented_written_beside_the_target_and_dirs_made(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path / "new" / "root")
    moves: list[tuple[str, str]] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moves.append((str(a), str(b))), real(a, b))[1])
    path = store.update("h200", "w", ENV, {"v": _summary()})
    assert path.read_text().startswith('{\n "schema_version": 2,\n "tier": "h200",\n')
    ((tmp, target),) = moves
    assert Path(tmp).parent == path.parent  # a rename within one folder is atomic
    assert Path(tmp).name.startswith(".w.json.")
    assert tmp.endswith(".tmp")
    assert target == str(path)
    assert BaselineStore(tmp_path / "other").save(Baseline("cpu", "w", {"v": Entry(_summary())})).exists()


def test_update_keeps_each_summarys_own_machine(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    store.update("h200", "w", Environment(gpu_name="other"), {"v": _summary()})
    loaded = store.load("h200", "w")
    assert loaded is not None
    assert loaded.machine_of("v") == ENV


def test_a_stale_lock_times_out_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_wan22.baselines as baselines

    monkeypatch.setattr(baselines, "LOCK_TIMEOUT_S", 0.05)
    store = BaselineStore(tmp_path)
    path = store.path("h200", "w")
    path.parent.mkdir(parents=True)
    lock = path.with_name(".w.json.lock")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock
        with FileLock({str(lock)!r}):
            print("held", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(BaselineError, match=f"{path} stayed locked by another session for 0.05 s; if none "
                           f"runs, delete the stale lock {lock}"):
            store.update("h200", "w", ENV, {"v": _summary()})
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()


def test_corrupt_files_set_aside_in_one_second_get_numbered_names(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)
    bad = _write(store, "{trunc", workflow="x")
    kept = store.move_aside(bad)
    assert kept.parent == bad.parent
    assert kept.name[len("x.json.corrupt-"):].replace("T", "").rstrip("Z").isdigit()
    assert len(kept.name) == len("x.json.corrupt-20260101T000000Z")
    import pytest_wan22.baselines as baselines

    monkeypatch.setattr(baselines.time, "strftime", lambda fmt, t=None: "STAMP")
    names = []
    for _ in range(3):
        _write(store, "{trunc", workflow="x")
        names.append(store.move_aside(bad).name)
    assert names == ["x.json.corrupt-STAMP", "x.json.corrupt-STAMP-2", "x.json.corrupt-STAMP-3"]


def test_check_names_every_unusable_file_on_its_own_line(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    _write(store, "{trunc", workflow="x")
    _write(store, "{trunc", workflow="y")
    with pytest.raises(BaselineError) as err:
        store.check("h200")
    lines = str(err.value).split("\n")
    assert [("x.json" in lines[0]), ("y.json" in lines[1]), len(lines)] == [True, True, 2]
    _write(store, json.dumps({"schema_version": 7, "tier": "h200", "workflow": "w"}))
    with pytest.raises(BaselineError, match=f"{store.path('h200', 'w')} is foreign: schema_version 7"):
        store.update("h200", "w", ENV, {"v": _summary()})


def test_machine_mismatch_on_models_says_how_to_compare_like_with_like() -> None:
    assert machine_mismatch(ENV, replace(ENV, models="synthetic:a14b")) == (
        "baseline recorded with user models, this run uses synthetic:a14b; compare like with like "
        "(--wan22-synthetic) or re-record with --wan22-update-baselines")


def test_drift_edges_gpu_of_the_latest_session_missing_tolerances_and_what_changed() -> None:
    shifted = [2.70, 2.71, 2.70, 2.69, 2.70, 2.71, 3.00, 2.99, 3.00, 3.01, 3.00]  # +11%
    tols = tolerances([])
    # the latest session decides the GPU: one session of GPU-2 has no history to drift from
    assert drift(_history(shifted, gpu="GPU-0") + _history([2.70], gpu="GPU-2"), None, tols) == []
    assert drift(_history(shifted, gpu="GPU-0") + _history([2.7] * 8, gpu="GPU-2"), None, tols) == []
    # no tolerance for the metric, or one without a ratio: any significant shift counts
    assert len(drift(_history(shifted), None, {})) == 1
    assert len(drift(_history(shifted), None, tolerances(["step:5ms"]))) == 1
    # the version that changed where the shift begins, not one session earlier; none: nothing in brackets
    (line,) = drift(_history(shifted, torch_from=5), None, tols)
    assert line.startswith("step shifted +11.0% from 2023-11-20 on, across 11 sessions of this GPU (p=")
    history = _history(shifted, torch_from=6)
    history[6] = replace(history[6], versions={"torch": "2.12.0", "driver": "590.1"})
    history[5] = replace(history[5], versions={"torch": "2.11.0", "driver": "580.1"})
    (line,) = drift(history, None, tols)
    assert "on (driver 580.1 -> 590.1, torch 2.11.0 -> 2.12.0)," in line
    history[6] = replace(history[6], versions={})  # a session that did not record its versions
    (line,) = drift(history, None, tols)
    assert " on, across" in line
    undated = [replace(s, recorded_at=0.0) for s in _history(shifted)]
    (line,) = drift(undated, None, tols)
    assert "from an undated session on" in line


def test_session_spread_edges() -> None:
    assert session_spread([]) == {}
    # the latest session's GPU decides: one session of GPU-2 is too few
    other = _history([2.9, 3.1, 2.8, 3.2, 2.9], gpu="GPU-0") + _history([2.7], gpu="GPU-2")
    assert session_spread(other) == {}
    values = [0.50, 0.505, 0.50, 0.505, 0.50]  # a sub-second metric (the cpu tier) counts too
    history = [Session(float(i), 3, {"load": 0.0, "step": v, "vram": 900.0 + 10 * i, "wall": 15.0 + i % 2}, "GPU-1")
               for i, v in enumerate(values)]
    spread = session_spread(history)
    assert sorted(spread) == ["step", "wall"]  # load cached to zero and vram (a peak) left out
    raw = statistics.fmean((b / a - 1) ** 2 for a, b in itertools.pairwise(values)) / 2
    assert spread["step"] == pytest.approx(math.sqrt(raw))
    two = Summary("v", 2, {"step": ((0.500,), (0.501,))})  # two rounds already have a spread
    means = [0.500, 0.501]
    less = raw - statistics.variance(means) / 2 / statistics.fmean(means) ** 2
    assert session_spread(history, two)["step"] == pytest.approx(math.sqrt(less))


def test_schema_1_keeps_a_variants_outcome(tmp_path: Path) -> None:
    v1 = json.loads(json.dumps(V1))
    v1["variants"]["high_low-5s"]["outcome"] = "oom"
    store = BaselineStore(tmp_path)
    _write(store, json.dumps(v1), workflow="wan22_i2v_a14b")
    old = store.load("h200", "wan22_i2v_a14b")
    assert old is not None
    assert old.variants["high_low-5s"].outcome == "oom"


def test_check_lines_name_each_file_and_what_happens_to_it(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    _write(store, "{trunc", workflow="x")
    _write(store, "{trunc", workflow="y")
    with pytest.raises(BaselineError) as err:
        store.check("h200")
    assert all(line.startswith("baseline file ") for line in str(err.value).split("\n"))
    lines = store.check("h200", update=True)
    assert len(lines) == 2
    assert all(line.startswith("baseline ") and line.endswith(", rewritten from this run") for line in lines)


def test_set_aside_names_carry_the_utc_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")  # nine hours from UTC, no daylight saving
    time.tzset()
    try:
        store = BaselineStore(tmp_path)
        before = time.strftime("%Y%m%dT%H", time.gmtime())
        kept = store.move_aside(_write(store, "{trunc"))
        after = time.strftime("%Y%m%dT%H", time.gmtime())
        assert kept.name[len("w.json.corrupt-"):][:11] in (before, after)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _same_stamp(path: Path, text: str) -> None:
    """Rewrite a file with text of the same size and put its old modification time back."""
    st = path.stat()
    assert len(text) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_writes_drop_the_cached_file_even_when_its_stamp_would_not_tell(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.save(Baseline("h200", "w", {"v": Entry(_summary(step=2.6))}))
    assert store.load("h200", "w") is not None  # cached
    st = path.stat()
    store.save(Baseline("h200", "w", {"v": Entry(_summary(step=2.7))}))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    loaded = store.load("h200", "w")
    assert loaded is not None
    assert loaded.variants["v"].step_median == pytest.approx(2.7)
    # another session's write that the stamp cannot tell from the cached one is still merged, not lost
    _same_stamp(path, path.read_text().replace("2.7", "2.9"))
    store.update("h200", "w", ENV, {"u": _summary("u")})
    merged = BaselineStore(tmp_path).load("h200", "w")
    assert merged is not None
    assert merged.variants["v"].step_median == pytest.approx(2.9)


def test_a_merge_conflicted_file_is_named_as_such_with_the_fix(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    good = json.loads(GOOD)
    ours = json.dumps(good, indent=1).splitlines()
    conflicted = "\n".join([*ours[:3], "<<<<<<< HEAD", *ours[3:5], "=======", *ours[3:5], ">>>>>>> other",
                            *ours[5:]])
    path = _write(store, conflicted)
    with pytest.raises(BaselineError) as info:
        store.check("h200")
    message = str(info.value)
    assert message.startswith(f"baseline file {path} has an unresolved git merge conflict (its markers start at "
                              "line 4): resolve it (")
    assert "merge conflict" in message
    assert message.endswith("or rerun with --wan22-update-baselines, which keeps it aside and records the variants "
                            "again")
    (line,) = store.check("h200", update=True)  # recording again sets it aside, as any corrupt file
    assert "merge conflict" in line
    assert not path.exists()

"""workflows/tuning/ holds the suite's graph as the builder writes it for tuning: it must not drift from it."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_wan22.workflows import Variant, load_workflow

ROOT = Path(__file__).resolve().parents[2] / "workflows"


def test_the_lora_free_four_step_graph_is_what_the_builder_writes() -> None:
    wf = load_workflow(ROOT / "wan22_i2v_a14b.json")
    built = Variant(wf).resolution(640, 640).schedule(steps=4, cfg=1.0, split=2).duration(5).seed(7).build()
    stored = json.loads((ROOT / "tuning" / "wan22_i2v_a14b_4step_nolora.json").read_text())
    assert stored == built
    assert not [n for n in stored.values() if "Lora" in n["class_type"]]

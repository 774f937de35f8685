"""Model files and inputs written by layout before a run (synth.ensure_files, ensure_media, synth_plan.ensure_for):
once per layout, linked to every name with it, reused by the next session, never over a file the plugin did not
write. A fake interpreter stands in for ComfyUI's; one test writes real files with torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pytest_wan22 import synth
from pytest_wan22.errors import SynthError
from pytest_wan22.synth_plan import ensure_for

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")

FAKE = """#!{python}
import json, os, sys
jobs = json.load(open(sys.argv[sys.argv.index("--jobs") + 1]))
spec = json.loads(os.environ["FAKE_SYNTH"])
with open(spec["counter"], "a") as f:
    f.write(json.dumps(jobs) + "\\n")
if spec.get("fail"):
    print("boom: no torch here", file=sys.stderr)
    sys.exit(3)
for job in jobs.get("files", []) + jobs.get("media", []):
    if os.path.basename(job["path"]) in spec.get("skip", []):
        continue
    os.makedirs(os.path.dirname(job["path"]), exist_ok=True)
    with open(job["path"], "wb") as f:
        f.write(json.dumps(job.get("layout") or job["kind"]).encode())
"""

TINY_I2V = {"kind": "wan_dit", "dim": 128, "ffn_dim": 256, "layers": 2, "in_dim": 36, "out_dim": 16,
            "format": "fp8_scaled"}
HIGH = "models/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
LOW = "models/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    exe = tmp_path / "fake-python"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    counter = tmp_path / "runs.jsonl"
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({"counter": str(counter)}))
    return str(exe), counter


def _runs(counter: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in counter.read_text().splitlines()] if counter.exists() else []


def test_same_layout_is_written_once_and_linked_to_every_name(tmp_path: Path, fake: tuple[str, Path]) -> None:
    python, counter = fake
    root = tmp_path / "set"
    jobs = [synth.FileJob(HIGH, TINY_I2V), synth.FileJob(LOW, TINY_I2V)]
    assert synth.ensure_files(python, root, jobs, log_path=tmp_path / "w.log") == [HIGH, LOW]
    (run,) = _runs(counter)
    assert len(run["files"]) == 1  # type: ignore[arg-type]
    high, low = root / HIGH, root / LOW
    assert high.read_bytes() == low.read_bytes()
    if os.name != "nt":
        assert high.stat().st_ino == low.stat().st_ino  # hard links to one blob
    stamp = json.loads(synth.file_stamp_path(root, HIGH).read_text())
    assert stamp["digest"] == synth.layout_digest(TINY_I2V)
    assert stamp["layout"] == TINY_I2V

    assert synth.ensure_files(python, root, jobs) == []  # the next session
    assert len(_runs(counter)) == 1


def test_a_changed_layout_or_size_is_written_again_a_foreign_file_never(tmp_path: Path,
                                                                       fake: tuple[str, Path]) -> None:
    python, counter = fake
    root = tmp_path / "set"
    synth.ensure_files(python, root, [synth.FileJob(HIGH, TINY_I2V)])
    synth.ensure_files(python, root, [synth.FileJob(HIGH, {**TINY_I2V, "in_dim": 16})])
    assert len(_runs(counter)) == 2
    assert json.loads((root / HIGH).read_text())["in_dim"] == 16

    synth.ensure_files(python, root, [synth.FileJob(HIGH, TINY_I2V)])  # its blob is still there: linked again
    assert len(_runs(counter)) == 2
    assert json.loads((root / HIGH).read_text())["in_dim"] == 36

    (root / HIGH).unlink()
    (root / HIGH).write_bytes(b"truncated")
    synth.ensure_files(python, root, [synth.FileJob(HIGH, TINY_I2V)])
    assert json.loads((root / HIGH).read_text())["in_dim"] == 36

    mine = root / "models/vae/my_own_vae.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's")
    assert synth.ensure_files(python, root, [synth.FileJob("models/vae/my_own_vae.safetensors",
                                                           {"kind": "wan21_vae", "dim": 8})]) == []
    assert mine.read_bytes() == b"the user's"


def test_writer_failures_name_the_command_and_output(tmp_path: Path, fake: tuple[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    python, counter = fake
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({"counter": str(counter), "fail": True}))
    with pytest.raises(SynthError) as info:
        synth.ensure_files(python, tmp_path / "set", [synth.FileJob(HIGH, TINY_I2V)])
    assert "exited with code 3" in str(info.value)
    assert "boom: no torch here" in str(info.value)
    assert "--jobs" in str(info.value)
    assert not (tmp_path / "set" / HIGH).exists()

    blob = synth.blob_path(tmp_path / "set", synth.layout_digest(TINY_I2V)).name
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({"counter": str(counter), "skip": [blob]}))
    with pytest.raises(SynthError, match="did not write"):
        synth.ensure_files(python, tmp_path / "set", [synth.FileJob(HIGH, TINY_I2V)])


def test_media_are_written_per_spec_and_noted(tmp_path: Path, fake: tuple[str, Path]) -> None:
    python, counter = fake
    root = tmp_path / "set"
    job = {"name": "clip.mp4", "kind": "video", "width": 64, "height": 64, "frames": 9, "fps": 16.0,
           "describe": "video 64x64, 9 frames at 16 fps"}
    assert synth.ensure_media(python, root, [job]) == ["clip.mp4"]
    assert (root / "input" / "clip.mp4").is_file()
    assert synth.media_note(root, "clip.mp4") == "video 64x64, 9 frames at 16 fps"
    assert synth.media_note(root, "other.png") is None
    assert synth.ensure_media(python, root, [job]) == []
    assert synth.ensure_media(python, root, [{**job, "frames": 17}]) == ["clip.mp4"]
    assert len(_runs(counter)) == 2


def test_ensure_for_writes_what_a_graph_names(tmp_path: Path, fake: tuple[str, Path]) -> None:
    python, counter = fake
    root = tmp_path / "set"
    g = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"}},
         "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "l.safetensors"}},
         "3": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9}},
         "4": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "latent_image": ["3", 0]}},
         "5": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
         "6": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}}}
    clip = {"width": 64, "height": 48, "length": 9, "fps": 16.0}
    written = ensure_for(g, root, size="tiny", python=python, clip=clip, log_dir=tmp_path)
    assert written == ["models/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                       "models/loras/l.safetensors", "models/vae/wan_2.1_vae.safetensors", "ref.png"]
    assert synth.media_note(root, "ref.png") == "image 64x48"
    assert ensure_for(g, root, size="tiny", python=python, clip=clip) == []
    assert len(_runs(counter)) == 2  # the files, then the media; nothing the second time


def test_the_session_is_told_what_a_first_run_had_written_and_how_long_it_took(tmp_path: Path,
                                                                                fake: tuple[str, Path]) -> None:
    from pytest_wan22.report import cost
    from pytest_wan22.servers import written_note

    python, _ = fake
    root = tmp_path / "set"
    written = synth.ensure_files(python, root, [synth.FileJob(HIGH, TINY_I2V), synth.FileJob(LOW, TINY_I2V)])
    size = (root / HIGH).stat().st_size
    note = written_note(root, "high_low-5s", written, 12.34)
    assert note.startswith("high_low-5s: 2 synthetic files written in 12.3 s")
    assert f"({size / 1e9:.2f} GB, 1 distinct)" in note  # two names linked to one layout count once
    assert "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors, wan2.2_i2v_low_noise" in note
    assert str(root / "synth-files.log") in note
    assert cost([], 0.0, [], [note])[-1] == f"wan22: {note}"

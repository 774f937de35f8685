"""Tests for the synthetic RIFE checkpoint (pure parts without torch, one real write when torch is at hand)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_wan22 import synth
from pytest_wan22.errors import SynthError, Wan22Error

IFNET_47_PARAMS = 5_325_012  # IFNet(arch_ver="4.7") of ComfyUI-Frame-Interpolation


def _pack(root: Path) -> Path:
    """A folder that passes for the node pack (it has the RIFE module and the shipped config.yaml)."""
    pack = root / "ComfyUI-Frame-Interpolation"
    (pack / "vfi_models" / "rife").mkdir(parents=True)
    (pack / synth.RIFE_MARKER).write_text("")
    (pack / "config.yaml").write_text('ckpts_path: "./ckpts"\nops_backend: "cupy" #Either "taichi" or "cupy"')
    return pack


# ----------------------------------------------------------------------------- layout


def test_ifnet_47_layout_has_the_real_names_and_shapes() -> None:
    s = synth.rife_shapes("4.7")
    assert len(s) == 124
    assert sum(math.prod(shape) for shape in s.values()) == IFNET_47_PARAMS
    assert s["block0.conv0.0.0.weight"] == (96, 15, 3, 3)  # 7 + 8 inputs: two frames, timestep, features
    assert s["block1.conv0.0.0.weight"] == (64, 20, 3, 3)
    assert s["block3.conv0.1.0.weight"] == (64, 32, 3, 3)
    assert s["block2.convblock.7.beta"] == (1, 96, 1, 1)
    assert s["block2.convblock.7.conv.weight"] == (96, 96, 3, 3)
    assert s["block0.lastconv.0.weight"] == (192, 24, 4, 4)  # ConvTranspose2d: (in, out, k, k)
    assert s["block3.lastconv.0.bias"] == (24,)
    assert s["encode.0.weight"] == (16, 3, 3, 3)
    assert s["encode.1.weight"] == (16, 4, 4, 4)
    names = list(s)
    assert names[:5] == ["block0.conv0.0.0.weight", "block0.conv0.0.0.bias", "block0.conv0.1.0.weight",
                         "block0.conv0.1.0.bias", "block0.convblock.0.beta"]  # state_dict order
    assert names[-1] == "encode.1.bias"
    assert not any(n.startswith(("contextnet.", "unet.", "module.")) for n in names)


def test_unknown_checkpoints_and_arches_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown RIFE checkpoint 'rife426\.pth'"):
        synth.rife_specs("rife426.pth")
    with pytest.raises(ValueError, match=r"only 4\.7"):
        synth.rife_shapes("4.26")
    with pytest.raises(ValueError, match="unknown RIFE checkpoint"):
        synth.rife_command("python", "/pack", ckpt="film_net_fp32.pt")


def test_specs_are_float32_with_finite_friendly_inits() -> None:
    specs = {t.name: t for t in synth.rife_specs()}
    assert list(specs) == list(synth.rife_shapes())
    assert {t.dtype for t in specs.values()} == {"F32"}
    assert specs["block0.convblock.0.beta"].init == "ones"
    assert specs["block0.convblock.0.conv.bias"].init == "zeros"
    conv = specs["block0.convblock.0.conv.weight"]
    assert conv.init == "normal"
    assert conv.value == pytest.approx(0.5 / math.sqrt(192 * 9))
    head = specs["block0.lastconv.0.weight"]
    assert 0 < head.value < conv.value  # small flow heads keep the warps within a few pixels
    assert synth.rife_payload_bytes() == 4 * IFNET_47_PARAMS
    assert [t.shape for t in synth.rife_specs("rife49.pth")] == [t.shape for t in specs.values()]


# ----------------------------------------------------------------------------- paths and commands


def test_checkpoint_path_follows_the_pack_config(tmp_path: Path) -> None:
    pack = _pack(tmp_path)
    assert synth.rife_path(pack) == pack / "./ckpts" / "rife" / "rife47.pth"
    assert synth.rife_path(pack, "rife49.pth").name == "rife49.pth"
    (pack / "config.yaml").write_text("ops_backend: taichi\nckpts_path: 'weights'  # moved\n")
    assert synth.rife_ckpt_dir(pack) == pack / "weights" / "rife"
    elsewhere = tmp_path / "shared-ckpts"
    (pack / "config.yaml").write_text(f"ckpts_path: {elsewhere}\n")
    assert synth.rife_path(pack) == elsewhere / "rife" / "rife47.pth"
    assert synth.rife_ckpt_dir(tmp_path / "nowhere") == tmp_path / "nowhere" / "ckpts" / "rife"
    assert synth.RIFE_PACK_DIR == "custom_nodes/ComfyUI-Frame-Interpolation"


def test_rife_command_runs_this_file_by_path(tmp_path: Path) -> None:
    cmd = synth.rife_command("/venv/bin/python", tmp_path / "pack", seed=7, device="cuda")
    assert cmd == ["/venv/bin/python", str(Path(synth.__file__).resolve()), "--rife-dir", str(tmp_path / "pack"),
                   "--rife-ckpt", "rife47.pth", "--seed", "7", "--device", "cuda"]


def test_cli_dry_run_for_rife_writes_nothing(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    res = subprocess.run([sys.executable, synth.__file__, "--rife-dir", str(pack), "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    assert str(pack / "ckpts" / "rife" / "rife47.pth") in res.stdout
    assert "wan22_tiny" not in res.stdout  # no base directory given: no Wan set
    if importlib.util.find_spec("torch") is None:
        assert f"{4 * IFNET_47_PARAMS:,d} B" in res.stdout
    assert not pack.exists()


def test_cli_needs_a_base_directory_or_a_rife_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        synth.main(["--dry-run"])
    assert info.value.code == 2
    assert "--rife-dir PACK_DIR" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ensure_rife and the stamp

FAKE = """#!{python}
import json, os, sys
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))  # argv[1]: synth.py
spec = json.loads(os.environ["FAKE_RIFE"])
with open(spec["counter"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
print("fake rife writer output")
if spec.get("fail"):
    print("boom: no torch here", file=sys.stderr)
    sys.exit(4)
if spec.get("write", True):
    path = os.path.join(args["--rife-dir"], "ckpts", "rife", args["--rife-ckpt"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * 100)
"""


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An executable that writes a 100-byte checkpoint where --rife-dir says and counts its runs."""
    if os.name == "nt":
        pytest.skip("the fake interpreter is a shebang script")
    exe = tmp_path / "fake-python"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    counter = tmp_path / "runs.txt"
    monkeypatch.setenv("FAKE_RIFE", json.dumps({"counter": str(counter)}))
    return str(exe), counter


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _fake(monkeypatch: pytest.MonkeyPatch, **kw: object) -> None:
    monkeypatch.setenv("FAKE_RIFE", json.dumps({**json.loads(os.environ["FAKE_RIFE"]), **kw}))


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_rife_writes_once_then_reuses(tmp_path: Path, fake_python: tuple[str, Path]) -> None:
    python, counter = fake_python
    pack = _pack(tmp_path)
    path = synth.ensure_rife(python, pack, timeout=30, log_path=tmp_path / "rife.log")
    assert path == synth.rife_path(pack)
    assert path.stat().st_size == 100
    assert _runs(counter) == 1
    assert f"--rife-dir {pack} --rife-ckpt rife47.pth --seed {synth.Options.seed}" in counter.read_text()
    assert "fake rife writer output" in (tmp_path / "rife.log").read_text()
    stamp = json.loads(synth.rife_stamp_path(pack).read_text())
    assert stamp == {"version": synth.SYNTH_VERSION, "ckpt": "rife47.pth", "arch": "4.7",
                     "seed": synth.Options.seed, "bytes": 100}

    assert synth.ensure_rife(python, pack, timeout=30) == path
    assert _runs(counter) == 1  # reused
    assert synth.ensure_rife(python, pack, ckpt="rife49.pth", timeout=30).name == "rife49.pth"
    assert _runs(counter) == 2  # another checkpoint has its own stamp
    assert synth.ensure_rife(python, pack, timeout=30) == path
    assert _runs(counter) == 2


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_rife_rewrites_when_the_stamp_does_not_match(tmp_path: Path, fake_python: tuple[str, Path]) -> None:
    python, counter = fake_python
    pack = _pack(tmp_path)
    path = synth.ensure_rife(python, pack)
    path.write_bytes(b"truncated")  # size changed
    assert not synth.rife_stamp_matches(pack)
    synth.ensure_rife(python, pack)
    assert _runs(counter) == 2

    synth.ensure_rife(python, pack, seed=99)
    assert _runs(counter) == 3
    assert synth.rife_stamp_matches(pack, seed=99)
    assert not synth.rife_stamp_matches(pack)

    stamp = synth.rife_stamp_path(pack)
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "version": synth.SYNTH_VERSION + 1}))
    synth.ensure_rife(python, pack, seed=99)
    assert _runs(counter) == 4

    stamp.write_text("not json")
    synth.ensure_rife(python, pack, seed=99)
    assert _runs(counter) == 5

    path.unlink()
    synth.ensure_rife(python, pack, seed=99)
    assert _runs(counter) == 6
    assert path.is_file()


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_rife_failure_names_command_output_and_fix(
        tmp_path: Path, fake_python: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    python, _ = fake_python
    pack = _pack(tmp_path)
    _fake(monkeypatch, fail=True)
    with pytest.raises(SynthError) as info:
        synth.ensure_rife(python, pack)
    msg = str(info.value)
    assert isinstance(info.value, Wan22Error)
    assert "exited with code 4" in msg
    assert "boom: no torch here" in msg
    assert "--wan22-python" in msg
    assert str(synth.rife_path(pack)) in msg
    assert info.value.command[:3] == (python, str(Path(synth.__file__).resolve()), "--rife-dir")
    assert not synth.rife_stamp_path(pack).exists()


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_rife_reports_a_missing_file(tmp_path: Path, fake_python: tuple[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    python, _ = fake_python
    _fake(monkeypatch, write=False)
    with pytest.raises(SynthError, match="the file is not there"):
        synth.ensure_rife(python, _pack(tmp_path))


def test_ensure_rife_refuses_a_folder_that_is_not_the_pack(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match=r"not a ComfyUI-Frame-Interpolation folder.*custom_nodes/") as info:
        synth.ensure_rife(sys.executable, tmp_path / "custom_nodes" / "other-pack")
    assert synth.RIFE_MARKER in str(info.value)
    assert not (tmp_path / "custom_nodes").exists()


def test_ensure_rife_with_a_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="cannot run"):
        synth.ensure_rife(str(tmp_path / "no-such-python"), _pack(tmp_path))


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_rife_timeout(tmp_path: Path) -> None:
    exe = tmp_path / "slow-python"
    exe.write_text(f"#!{sys.executable}\nimport time\nprint('started', flush=True)\ntime.sleep(30)\n")
    exe.chmod(0o755)
    with pytest.raises(SynthError, match=r"within 0\.5 s") as info:
        synth.ensure_rife(str(exe), _pack(tmp_path), timeout=0.5)
    assert "started" in str(info.value)


# ----------------------------------------------------------------------------- a real write




LOAD = """import json, sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({k: [list(v.shape), str(v.dtype), bool(torch.isfinite(v).all()), float(v.abs().max())]
                  for k, v in sd.items()}))
"""


def test_writes_a_checkpoint_with_the_ifnet_layout(tmp_path: Path, torch_python: str) -> None:
    python = torch_python
    pack = _pack(tmp_path)
    path = synth.ensure_rife(python, pack, timeout=300, log_path=tmp_path / "rife.log")
    assert "rife47.pth" in (tmp_path / "rife.log").read_text()
    res = subprocess.run([python, "-c", LOAD, str(path)], capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stdout)
    assert list(loaded) == list(synth.rife_shapes())
    for name, (shape, dtype, finite, amax) in loaded.items():
        assert tuple(shape) == synth.rife_shapes()[name], name
        assert dtype == "torch.float32", name
        assert finite, name
        spec = next(t for t in synth.rife_specs() if t.name == name)
        assert (amax == 0) == (spec.init == "zeros"), name
    assert synth.rife_stamp_matches(pack)
    assert path.stat().st_size > synth.rife_payload_bytes()

"""Tests for the synthetic Wan 2.2 model generator (pure parts without torch, one real tiny generation)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from pytest_wan22 import synth
from pytest_wan22.errors import SynthError, Wan22Error

COMFY_DIT_BYTES = 14_294_715_992  # Comfy-Org wan2.2_i2v_*_14B_fp8_scaled.safetensors


# ----------------------------------------------------------------------------- names and commands


def test_tiny_model_set_names() -> None:
    ms = synth.model_set("tiny")
    assert ms.files == {
        "high": "models/diffusion_models/wan22_tiny_i2v_high_noise.safetensors",
        "low": "models/diffusion_models/wan22_tiny_i2v_low_noise.safetensors",
        "vae": "models/vae/wan21_tiny_vae.safetensors",
        "image": "input/wan22_tiny_start.png",
        "conditioning": "output/wan22_tiny_cond",
    }
    assert ms.name("high") == "wan22_tiny_i2v_high_noise.safetensors"
    assert ms.name("conditioning") == "wan22_tiny_cond"
    assert ms.path("/base", "vae") == Path("/base/models/vae/wan21_tiny_vae.safetensors")


def test_a14b_model_set_uses_official_names() -> None:
    ms = synth.model_set("a14b", lora_rank=64)
    names = {role: ms.name(role) for role in ms.files}
    assert names["high"] == "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
    assert names["low"] == "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
    assert names["text_encoder"] == "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    assert names["vae"] == "wan_2.1_vae.safetensors"
    assert names["lora_high"] == "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"
    assert names["lora_low"] == "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"
    assert synth.PRESETS["a14b"].image_size == (640, 640)


def test_text_encoder_option_changes_the_set() -> None:
    assert "text_encoder" not in synth.model_set("tiny").files
    stub = synth.model_set("tiny", text_encoder="stub")
    assert stub.name("text_encoder") == "umt5_xxl_tiny_stub.safetensors"
    assert "text_encoder" not in synth.model_set("a14b", text_encoder="none").files
    with pytest.raises(ValueError, match="unknown preset"):
        synth.model_set("huge")
    with pytest.raises(ValueError, match="unknown text encoder"):
        synth.model_set("tiny", text_encoder="t5")


def test_generate_command_runs_this_file_by_path(tmp_path: Path) -> None:
    cmd = synth.generate_command("/venv/bin/python", tmp_path, "a14b", device="cuda",
                                 extra=["--lora-rank", "64"])
    assert cmd == ["/venv/bin/python", str(Path(synth.__file__).resolve()), str(tmp_path),
                   "--preset", "a14b", "--device", "cuda", "--lora-rank", "64"]


def test_module_imports_only_the_stdlib_and_runs_as_a_script(tmp_path: Path) -> None:
    code = ("import importlib.util, sys; before = set(sys.modules); "
            f"spec = importlib.util.spec_from_file_location('synth_alone', {synth.__file__!r}); "
            "mod = sys.modules['synth_alone'] = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(mod); "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m != 'synth_alone' and m.split('.')[0] not in sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # run by path, outside the package, the way ComfyUI's interpreter runs it
    res = subprocess.run([sys.executable, synth.__file__, str(tmp_path), "--dry-run"],
                         capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    assert "wan22_tiny_i2v_high_noise.safetensors" in res.stdout
    assert not (tmp_path / "models").exists()


# ----------------------------------------------------------------------------- layouts and sizes


def test_a14b_dit_file_has_the_comfy_org_size() -> None:
    sizes = synth.planned_sizes("a14b", synth.Options(text_encoder="none"))
    ms = synth.model_set("a14b")
    assert sizes[ms.files["high"]] == COMFY_DIT_BYTES
    assert sizes[ms.files["low"]] == COMFY_DIT_BYTES


def test_a14b_layout_is_fp8_scaled() -> None:
    specs = {t.name: t for t in synth.dit_specs(synth.PRESETS["a14b"])}
    assert specs["scaled_fp8"].shape == (0,)
    assert specs["blocks.39.ffn.0.weight"][1:3] == ((13824, 5120), "F8_E4M3")
    assert specs["blocks.39.ffn.0.scale_weight"][1:3] == ((), "F32")
    assert specs["patch_embedding.weight"][1:3] == ((5120, 36, 1, 2, 2), "BF16")
    assert specs["head.head.weight"].shape == (64, 5120)
    assert specs["blocks.0.modulation"][1:3] == ((1, 6, 5120), "BF16")
    full = {t.name: t for t in synth.dit_specs(synth.PRESETS["a14b"], fp8_matmul="full")}
    assert full["scaled_fp8"].shape == (2,)


def test_lora_and_text_encoder_sizes() -> None:
    opts = synth.Options(text_encoder="full", lora_rank=64)
    sizes = synth.planned_sizes("a14b", opts, tokenizer_bytes=1)
    ms = synth.model_set("a14b", text_encoder="full", lora_rank=64)
    assert 1.13 * 2**30 < sizes[ms.files["lora_high"]] < 1.15 * 2**30  # LightX2V rank-64 fp32: 1.14 GiB
    assert sizes[ms.files["text_encoder"]] == 6_731_361_633
    assert sizes[ms.files["vae"]] == 253_806_238


def test_dry_run_prints_sizes_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "base"), "--preset", "a14b", "--text-encoder", "none", "--print-sizes"]
    assert synth.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{COMFY_DIT_BYTES:,d} B" in out
    assert "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors" in out
    assert not (tmp_path / "base").exists()


def test_stream_safetensors_writes_header_and_data(tmp_path: Path) -> None:
    specs = [synth.TensorSpec("a", (2, 3), "BF16", "zeros"), synth.TensorSpec("s", (), "F32", "const", 2.0),
             synth.TensorSpec("m", (0,), "F8_E4M3", "zeros")]
    path = tmp_path / "x" / "f.safetensors"
    size = synth.stream_safetensors(path, specs, lambda t: bytes([len(t.name)]) * t.nbytes)
    assert size == synth.safetensors_size(specs) == path.stat().st_size
    header = synth.read_safetensors_header(path)
    assert header["a"] == {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}
    assert header["s"] == {"dtype": "F32", "shape": [], "data_offsets": [12, 16]}
    assert header["m"]["data_offsets"] == [16, 16]
    assert list(tmp_path.joinpath("x").iterdir()) == [path]


def test_stream_safetensors_leaves_nothing_on_a_wrong_size(tmp_path: Path) -> None:
    path = tmp_path / "f.safetensors"
    with pytest.raises(ValueError, match="declared 4"):
        synth.stream_safetensors(path, [synth.TensorSpec("a", (1,), "F32", "zeros")], lambda t: b"12")
    assert list(tmp_path.iterdir()) == []


def test_png_is_a_valid_rgb_image() -> None:
    data = synth.png_bytes(5, 3)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (5, 3)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    assert len(raw) == 3 * (1 + 5 * 3)
    assert raw[1:4] == bytes([0, 0, 128])
    assert raw[-3:] == bytes([255, 255, 128])


# ----------------------------------------------------------------------------- ensure_models and the stamp

FAKE = """#!{python}
import json, os, sys
out = sys.argv[2]
spec = json.loads(os.environ["FAKE_SYNTH"])
with open(spec["counter"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
print("fake generator output")
if spec.get("fail"):
    print("boom: no torch here", file=sys.stderr)
    sys.exit(3)
for rel in spec["files"]:
    path = os.path.join(out, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * 10)
"""


@pytest.fixture
def fake_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An executable that writes the tiny set's files (dataset folder as one shard) and counts its runs."""
    if os.name == "nt":
        pytest.skip("the fake interpreter is a shebang script")
    exe = tmp_path / "fake-python"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(0o755)
    counter = tmp_path / "runs.txt"
    files = [rel if rel != "output/wan22_tiny_cond" else rel + "/shard_0000.pkl"
             for rel in synth.model_set("tiny", text_encoder="stub").files.values()]
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({"counter": str(counter), "files": files}))
    return str(exe), counter


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_models_generates_once_then_reuses(tmp_path: Path, fake_python: tuple[str, Path]) -> None:
    python, counter = fake_python
    base = tmp_path / "base"
    ms = synth.ensure_models(python, base, "tiny", log_path=tmp_path / "synth.log")
    assert _runs(counter) == 1
    assert "--preset tiny --device cpu --text-encoder none" in counter.read_text()
    assert "fake generator output" in (tmp_path / "synth.log").read_text()
    stamp = json.loads(synth.stamp_path(base, "tiny").read_text())
    assert stamp["version"] == synth.SYNTH_VERSION
    assert stamp["preset"] == "tiny"
    assert stamp["files"]["output/wan22_tiny_cond/shard_0000.pkl"] == 10
    assert all(ms.path(base, role).exists() for role in ms.files)

    assert synth.ensure_models(python, base, "tiny") == ms
    assert _runs(counter) == 1  # reused


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_models_regenerates_when_the_stamp_does_not_match(
        tmp_path: Path, fake_python: tuple[str, Path]) -> None:
    python, counter = fake_python
    base = tmp_path / "base"
    ms = synth.ensure_models(python, base, "tiny")
    ms.path(base, "high").write_bytes(b"short")  # size changed
    synth.ensure_models(python, base, "tiny")
    assert _runs(counter) == 2

    stamp = synth.stamp_path(base, "tiny")
    body = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**body, "version": synth.SYNTH_VERSION + 1}))
    synth.ensure_models(python, base, "tiny")
    assert _runs(counter) == 3

    synth.ensure_models(python, base, "tiny", text_encoder="stub")  # the stamp was for no text encoder
    assert _runs(counter) == 4
    synth.ensure_models(python, base, "tiny")  # a stub set also serves a request without one
    assert _runs(counter) == 4

    ms.path(base, "vae").unlink()
    synth.ensure_models(python, base, "tiny")
    assert _runs(counter) == 5


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_models_failure_names_command_output_and_fix(
        tmp_path: Path, fake_python: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    python, _ = fake_python
    spec = json.loads(os.environ["FAKE_SYNTH"])
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({**spec, "fail": True}))
    with pytest.raises(SynthError) as info:
        synth.ensure_models(python, tmp_path / "base", "tiny")
    msg = str(info.value)
    assert isinstance(info.value, Wan22Error)
    assert "exited with code 3" in msg
    assert "boom: no torch here" in msg
    assert "--wan22-python" in msg
    assert python in msg
    assert not synth.stamp_path(tmp_path / "base", "tiny").exists()


def test_ensure_models_with_a_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="cannot run"):
        synth.ensure_models(str(tmp_path / "no-such-python"), tmp_path / "base", "tiny")


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_models_reports_files_it_did_not_get(tmp_path: Path, fake_python: tuple[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    python, _ = fake_python
    spec = json.loads(os.environ["FAKE_SYNTH"])
    monkeypatch.setenv("FAKE_SYNTH", json.dumps({**spec, "files": spec["files"][:2]}))
    with pytest.raises(SynthError, match=r"did not write .*wan21_tiny_vae"):
        synth.ensure_models(python, tmp_path / "base", "tiny")


@pytest.mark.skipif(os.name == "nt", reason="the fake interpreter is a shebang script")
def test_ensure_models_timeout(tmp_path: Path) -> None:
    exe = tmp_path / "slow-python"
    exe.write_text(f"#!{sys.executable}\nimport time\nprint('started', flush=True)\ntime.sleep(30)\n")
    exe.chmod(0o755)
    with pytest.raises(SynthError, match=r"within 0\.5 s") as info:
        synth.ensure_models(str(exe), tmp_path / "base", "tiny", timeout=0.5)
    assert "started" in str(info.value)


# ----------------------------------------------------------------------------- a real tiny generation




def test_generates_the_tiny_set_with_the_real_layout(tmp_path: Path, torch_python: str) -> None:
    python = torch_python
    base = tmp_path / "base"
    ms = synth.ensure_models(python, base, "tiny", timeout=300, log_path=tmp_path / "synth.log")
    for role in ("high", "low"):
        path = ms.path(base, role)
        header = synth.read_safetensors_header(path)
        assert set(header) == set(synth.dit_shapes(128, 256, 2))
        assert header["patch_embedding.weight"]["shape"] == [128, 36, 1, 2, 2]
        assert header["blocks.1.ffn.0.weight"]["shape"] == [256, 128]
        assert header["blocks.1.cross_attn.norm_k.weight"]["shape"] == [128]
        assert header["head.head.weight"]["shape"] == [64, 128]
        assert {v["dtype"] for v in header.values()} == {"BF16"}
        end = max(v["data_offsets"][1] for v in header.values())
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
        assert path.stat().st_size == 8 + n + end
    vae = synth.read_safetensors_header(ms.path(base, "vae"))
    assert vae["encoder.conv1.weight"]["shape"] == [8, 3, 3, 3, 3]
    assert vae["decoder.head.2.weight"]["shape"] == [3, 8, 3, 3, 3]
    assert vae["decoder.upsamples.3.resample.1.weight"]["shape"] == [16, 32, 3, 3]
    assert len(vae) == len(synth.vae_shapes(8))
    assert ms.path(base, "image").read_bytes()[16:24] == struct.pack(">II", 64, 64)
    assert (ms.path(base, "conditioning") / "shard_0000.pkl").stat().st_size > 0
    assert json.loads((ms.path(base, "conditioning") / "metadata.json").read_text())["num_samples"] == 1
    assert "wan22_tiny_i2v_low_noise.safetensors" in (tmp_path / "synth.log").read_text()
    assert synth.stamp_matches(base, ms, synth.Options())


def test_ti2v_5b_sets_have_one_model_and_the_wan22_vae() -> None:
    tiny, full = synth.model_set("ti2v5b_tiny"), synth.model_set("ti2v5b")
    assert set(tiny.files) == {"model", "vae", "image", "conditioning"}
    assert set(full.files) == {"model", "vae", "image", "conditioning", "text_encoder"}
    assert full.name("model") == "wan2.2_ti2v_5B_fp16.safetensors"
    assert full.name("vae") == "wan2.2_vae.safetensors"
    with pytest.raises(ValueError, match="no LoRA layout"):
        synth.model_set("ti2v5b_tiny", lora_rank=8)


def test_ti2v_5b_layout_has_48_latent_channels_and_full_size() -> None:
    files = {f.role: f for f in synth.plan("ti2v5b", synth.Options(text_encoder="full"), 0)}
    assert set(files) == {"model", "vae", "text_encoder"}
    dit = {t.name: t for t in files["model"].specs or []}
    assert dit["patch_embedding.weight"].shape == (3072, 48, 1, 2, 2)
    assert dit["head.head.weight"].shape == (48 * 4, 3072)
    assert {t.dtype for t in dit.values()} == {"F16"}
    # the official file holds 5.0e9 fp16 parameters (10.0 GB)
    assert abs(synth.safetensors_size(files["model"].specs or []) - 9_999_658_840) < 1_000_000
    vae = {t.name: t.shape for t in files["vae"].specs or []}
    assert vae["encoder.conv1.weight"] == (160, 12, 3, 3, 3)  # patchified RGB input
    assert vae["conv2.weight"] == (48, 48, 1, 1, 1)
    assert vae["decoder.conv1.weight"] == (1024, 48, 3, 3, 3)
    assert "decoder.upsamples.0.upsamples.0.residual.2.weight" in vae  # how ComfyUI tells the 2.2 VAE
    assert vae["decoder.upsamples.0.upsamples.3.time_conv.weight"] == (2048, 1024, 3, 1, 1)
    assert len(vae) == 196
    tiny = {f.role: f for f in synth.plan("ti2v5b_tiny", synth.Options(), 0)}
    assert {t.name: t.shape for t in tiny["vae"].specs or []} == vae  # ComfyUI builds this VAE at one size
    assert {t.name: t.shape for t in tiny["model"].specs or []}["patch_embedding.weight"] == (128, 48, 1, 2, 2)


def test_help_speaks_to_users(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_wan22.synth import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Write Wan 2.2 model files filled with random weights" in text
    assert "--base-directory OUT" in text
    for preset in ("tiny", "a14b", "ti2v5b_tiny", "ti2v5b"):
        assert f"\n  {preset} " in text
    assert "examples:\n  wan22-synth " in text
    # every option says what it does, and no word is about how the module is built
    options = text.split("options:")[1].split("examples:")[0]
    flags = re.findall(r"^  (--[\w-]+)", options, re.MULTILINE)
    assert {"--preset", "--python", "--device", "--lora-rank", "--text-encoder", "--seed", "--fp8-matmul",
            "--dry-run", "--timing-json", "--rife-dir", "--rife-ckpt"} <= set(flags)
    for block in re.split(r"\n  (?=--)", options)[1:]:
        assert len(block.split()) > 3, block  # a flag with no help is only its name and metavar
    assert "imported by the plugin" not in text
    assert "stdlib" not in text

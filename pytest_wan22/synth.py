"""Random-weight Wan 2.2 image-to-video model files with the real tensor layout.

Runs as a script inside ComfyUI's interpreter (which has torch)::

    <comfyui-python> pytest_wan22/synth.py OUT --preset tiny|a14b [--device cuda] [--text-encoder stub]

and is imported by the plugin for its pure parts (names, sizes, commands, the reuse stamp).
Only the stdlib is imported at module level; torch and sentencepiece are imported where used.

Presets:
  tiny  CPU stand-ins in seconds: DiT dim 128 / ffn 256 / 2 layers (bf16), Wan 2.1 VAE base dim 8,
        a 64x64 start image and a precomputed (zero) text conditioning for LoadTrainingDataset.
  a14b  Full Wan 2.2 i2v A14B under the official Comfy-Org names in the fp8_scaled layout
        (float8_e4m3fn Linear weights + float32 per-tensor ``scale_weight`` + ``scaled_fp8`` marker),
        the full UMT5-XXL encoder (every weight written), the Wan 2.1 VAE and a 640x640 start image.
  ti2v5b_tiny  TI2V 5B stand-in for CPU: DiT dim 128 / 2 layers with 48 latent channels, and the Wan 2.2
        VAE (48 channels) at the size ComfyUI always builds it (about 0.7 GB in bf16).
  ti2v5b  Full TI2V 5B (dim 3072, 30 layers, fp16) as wan2.2_ti2v_5B_fp16.safetensors, the Wan 2.2 VAE as
        wan2.2_vae.safetensors and the full UMT5-XXL encoder.
Files are streamed tensor by tensor (random numbers drawn on --device) and written atomically.

RIFE (``--rife-dir PACK_DIR``, with or without OUT): a random-weight IFNet 4.7 state dict (torch.save) at
PACK_DIR/ckpts/rife/rife47.pth (or --rife-ckpt rife49.pth), where the "RIFE VFI" node of
Fannovel16/ComfyUI-Frame-Interpolation looks before it would download one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import itertools
import json
import math
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

SYNTH_VERSION = 1
DTYPE_BYTES: dict[str, int] = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "U8": 1}
FP8_MAX = 448.0
FP8_SPREAD = FP8_MAX / 6.0  # stored fp8 values ~ N(0, FP8_SPREAD^2), clipped to +-448
TEXT_ENCODERS = ("none", "stub", "full")
TE_FILES = {"stub": "models/text_encoders/umt5_xxl_tiny_stub.safetensors",
            "full": "models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"}
UMT5_XXL = {"d_model": 4096, "d_ff": 10240, "layers": 24, "heads": 64, "buckets": 32, "vocab": 256384}
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Preset:
    """Model sizes, weight format and file names of one synthetic set."""

    name: str
    dim: int
    ffn_dim: int
    layers: int
    vae_dim: int
    weight_format: str  # "bf16" or "fp8_scaled" (DiT Linear weights)
    text_encoder: str  # default text encoder: none | stub | full
    image_size: tuple[int, int]
    files: Mapping[str, str] = field(default_factory=dict)  # role -> path under the base dir
    family: str = "i2v_a14b"  # i2v_a14b: two experts, Wan 2.1 VAE; ti2v_5b: one model, Wan 2.2 VAE

    @property
    def in_dim(self) -> int:
        """DiT input channels: 36 (16 latent + 20 image conditioning) for A14B i2v, 48 latent for TI2V 5B."""
        return 48 if self.family == "ti2v_5b" else 36

    @property
    def out_dim(self) -> int:
        """DiT output (latent) channels: 16 with the Wan 2.1 VAE, 48 with the Wan 2.2 VAE."""
        return 48 if self.family == "ti2v_5b" else 16

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles every set of this preset has."""
        models = ("model",) if self.family == "ti2v_5b" else ("high", "low")
        return (*models, "vae", "image", "conditioning")


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 128, 256, 2, 8, "bf16", "none", (64, 64), {
        "high": "models/diffusion_models/wan22_tiny_i2v_high_noise.safetensors",
        "low": "models/diffusion_models/wan22_tiny_i2v_low_noise.safetensors",
        "vae": "models/vae/wan21_tiny_vae.safetensors",
        "image": "input/wan22_tiny_start.png",
        "conditioning": "output/wan22_tiny_cond",
        "lora_high": "models/loras/wan22_tiny_lora_high_noise.safetensors",
        "lora_low": "models/loras/wan22_tiny_lora_low_noise.safetensors",
    }),
    "a14b": Preset("a14b", 5120, 13824, 40, 96, "fp8_scaled", "full", (640, 640), {
        "high": "models/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
        "low": "models/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
        "vae": "models/vae/wan_2.1_vae.safetensors",
        "image": "input/wan22_i2v_start.png",
        "conditioning": "output/wan22_a14b_cond",
        "lora_high": "models/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "lora_low": "models/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    }),
    # TI2V 5B: one DiT (dim 3072, 30 layers, 48 latent channels) and the Wan 2.2 VAE. ComfyUI builds that VAE
    # at its full size whatever the file holds (encoder dim 160, decoder 256), so the tiny set has it too.
    "ti2v5b_tiny": Preset("ti2v5b_tiny", 128, 256, 2, 160, "bf16", "none", (64, 64), {
        "model": "models/diffusion_models/wan22_tiny_ti2v_5b.safetensors",
        "vae": "models/vae/wan22_synthetic_vae.safetensors",
        "image": "input/wan22_tiny_start.png",
        "conditioning": "output/wan22_tiny_cond",
    }, family="ti2v_5b"),
    "ti2v5b": Preset("ti2v5b", 3072, 14336, 30, 160, "fp16", "full", (1280, 704), {
        "model": "models/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
        "vae": "models/vae/wan2.2_vae.safetensors",
        "image": "input/wan22_ti2v_start.png",
        "conditioning": "output/wan22_ti2v5b_cond",
    }, family="ti2v_5b"),
}


@dataclass(frozen=True)
class ModelSet:
    """The files of one synthetic set: role -> path relative to the base directory.

    Roles: high, low, vae, text_encoder (optional), image, conditioning (a dataset folder under
    output/), lora_high/lora_low (optional).
    """

    preset: str
    files: dict[str, str]

    def name(self, role: str) -> str:
        """What a loader node is given: the file (or dataset folder) name."""
        return Path(self.files[role]).name

    def path(self, base: Path | str, role: str) -> Path:
        """Absolute location of a role's file under base."""
        return Path(base) / self.files[role]


@dataclass(frozen=True)
class Options:
    """Generation options that change what is written (and so must match for reuse)."""

    text_encoder: str = "none"
    lora_rank: int = 0
    seed: int = 1234
    fp8_matmul: str = "fast"


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def _options(preset: str, text_encoder: str | None, lora_rank: int, **kw: Any) -> Options:
    te = _preset(preset).text_encoder if text_encoder is None else text_encoder
    if te not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {te!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    return Options(te, lora_rank, **kw)


def model_set(preset: str, *, text_encoder: str | None = None, lora_rank: int = 0) -> ModelSet:
    """The files a generation with these options writes (text_encoder None: the preset's default)."""
    p, opts = _preset(preset), _options(preset, text_encoder, lora_rank)
    if lora_rank > 0 and p.family != "i2v_a14b":
        raise ValueError(f"preset {preset!r} has no LoRA layout; use --lora-rank 0")
    files = {r: p.files[r] for r in p.roles}
    if opts.text_encoder != "none":
        files["text_encoder"] = TE_FILES[opts.text_encoder]
    if lora_rank > 0:
        files.update(lora_high=p.files["lora_high"], lora_low=p.files["lora_low"])
    return ModelSet(preset, files)


# ----------------------------------------------------------------------------- tensor layouts


class TensorSpec(NamedTuple):
    """One tensor: name, shape, safetensors dtype, and how to fill it (value: std or constant)."""

    name: str
    shape: Shape
    dtype: str
    init: str  # normal | fp8 | ones | zeros | const | blob
    value: float = 0.0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def dit_shapes(dim: int, ffn_dim: int, layers: int, in_dim: int = 36, out_dim: int = 16,
               text_dim: int = 4096, freq_dim: int = 256) -> dict[str, Shape]:
    """Tensor names/shapes of a Wan 2.2 i2v DiT (patch 1x2x2, no image embedding)."""
    s: dict[str, Shape] = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,)}
    for pre, fan_in in (("text_embedding", text_dim), ("time_embedding", freq_dim)):
        s.update({f"{pre}.0.weight": (dim, fan_in), f"{pre}.0.bias": (dim,),
                  f"{pre}.2.weight": (dim, dim), f"{pre}.2.bias": (dim,)})
    s.update({"time_projection.1.weight": (dim * 6, dim), "time_projection.1.bias": (dim * 6,)})
    for i in range(layers):
        b = f"blocks.{i}."
        s[b + "modulation"] = (1, 6, dim)
        for att in ("self_attn", "cross_attn"):
            for p in "qkvo":
                s.update({f"{b}{att}.{p}.weight": (dim, dim), f"{b}{att}.{p}.bias": (dim,)})
            s.update({f"{b}{att}.norm_q.weight": (dim,), f"{b}{att}.norm_k.weight": (dim,)})
        s.update({b + "norm3.weight": (dim,), b + "norm3.bias": (dim,),
                  b + "ffn.0.weight": (ffn_dim, dim), b + "ffn.0.bias": (ffn_dim,),
                  b + "ffn.2.weight": (dim, ffn_dim), b + "ffn.2.bias": (dim,)})
    s.update({"head.modulation": (1, 2, dim), "head.head.weight": (out_dim * 4, dim),
              "head.head.bias": (out_dim * 4,)})
    return s


def vae_shapes(dim: int, z_dim: int = 16) -> dict[str, Shape]:
    """Tensor names/shapes of the Wan 2.1 causal video VAE (real file: dim 96)."""
    mult, temporal = (1, 2, 4, 4), (False, True, True)
    s: dict[str, Shape] = {}

    def res(p: str, cin: int, cout: int) -> None:
        s.update({p + "residual.0.gamma": (cin, 1, 1, 1), p + "residual.2.weight": (cout, cin, 3, 3, 3),
                  p + "residual.2.bias": (cout,), p + "residual.3.gamma": (cout, 1, 1, 1),
                  p + "residual.6.weight": (cout, cout, 3, 3, 3), p + "residual.6.bias": (cout,)})
        if cin != cout:
            s.update({p + "shortcut.weight": (cout, cin, 1, 1, 1), p + "shortcut.bias": (cout,)})

    def middle(p: str, c: int) -> None:
        res(p + "middle.0.", c, c)
        s.update({p + "middle.1.norm.gamma": (c, 1, 1), p + "middle.1.to_qkv.weight": (3 * c, c, 1, 1),
                  p + "middle.1.to_qkv.bias": (3 * c,), p + "middle.1.proj.weight": (c, c, 1, 1),
                  p + "middle.1.proj.bias": (c,)})
        res(p + "middle.2.", c, c)

    dims = [dim * m for m in (1, *mult)]
    s.update({"encoder.conv1.weight": (dims[0], 3, 3, 3, 3), "encoder.conv1.bias": (dims[0],)})
    idx = 0
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        for _ in range(2):
            res(f"encoder.downsamples.{idx}.", cin, cout)
            cin, idx = cout, idx + 1
        if i < len(mult) - 1:
            p = f"encoder.downsamples.{idx}."
            s.update({p + "resample.1.weight": (cout, cout, 3, 3), p + "resample.1.bias": (cout,)})
            if temporal[i]:
                s.update({p + "time_conv.weight": (cout, cout, 3, 1, 1), p + "time_conv.bias": (cout,)})
            idx += 1
    middle("encoder.", dims[-1])
    s.update({"encoder.head.0.gamma": (dims[-1], 1, 1, 1),
              "encoder.head.2.weight": (z_dim * 2, dims[-1], 3, 3, 3), "encoder.head.2.bias": (z_dim * 2,),
              "conv1.weight": (z_dim * 2, z_dim * 2, 1, 1, 1),
              "conv1.bias": (z_dim * 2,), "conv2.weight": (z_dim, z_dim, 1, 1, 1), "conv2.bias": (z_dim,)})
    dims = [dim * m for m in (mult[-1], *reversed(mult))]
    s.update({"decoder.conv1.weight": (dims[0], z_dim, 3, 3, 3), "decoder.conv1.bias": (dims[0],)})
    middle("decoder.", dims[0])
    idx = 0
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        cin = cin // 2 if i > 0 else cin  # the upsample before this stage halved the channels
        for _ in range(3):
            res(f"decoder.upsamples.{idx}.", cin, cout)
            cin, idx = cout, idx + 1
        if i < len(mult) - 1:
            p = f"decoder.upsamples.{idx}."
            s.update({p + "resample.1.weight": (cout // 2, cout, 3, 3), p + "resample.1.bias": (cout // 2,)})
            if temporal[::-1][i]:
                s.update({p + "time_conv.weight": (cout * 2, cout, 3, 1, 1),
                          p + "time_conv.bias": (cout * 2,)})
            idx += 1
    s.update({"decoder.head.0.gamma": (dims[-1], 1, 1, 1), "decoder.head.2.weight": (3, dims[-1], 3, 3, 3),
              "decoder.head.2.bias": (3,)})
    return s


def umt5_shapes() -> dict[str, Shape]:
    """Tensor names/shapes of the UMT5-XXL encoder as ComfyUI loads it."""
    c = UMT5_XXL
    d, f = c["d_model"], c["d_ff"]
    s: dict[str, Shape] = {"shared.weight": (c["vocab"], d), "encoder.final_layer_norm.weight": (d,)}
    for i in range(c["layers"]):
        b = f"encoder.block.{i}.layer."
        s.update({f"{b}0.SelfAttention.{p}.weight": (d, d) for p in "qkvo"})
        s.update({f"{b}0.SelfAttention.relative_attention_bias.weight": (c["buckets"], c["heads"]),
                  f"{b}0.layer_norm.weight": (d,), f"{b}1.DenseReluDense.wi_0.weight": (f, d),
                  f"{b}1.DenseReluDense.wi_1.weight": (f, d), f"{b}1.DenseReluDense.wo.weight": (d, f),
                  f"{b}1.layer_norm.weight": (d,)})
    return s


def wanvideo_t5_shapes() -> dict[str, Shape]:
    """UMT5-XXL's encoder in WanVideoWrapper's own layout (umt5-xxl-enc-bf16.safetensors): token_embedding,
    blocks.N.{norm1, attn.q/k/v/o, norm2, ffn.gate.0, ffn.fc1, ffn.fc2, pos_embedding.embedding}, norm."""
    c = UMT5_XXL
    d, f = c["d_model"], c["d_ff"]
    s: dict[str, Shape] = {"token_embedding.weight": (c["vocab"], d)}
    for i in range(c["layers"]):
        b = f"blocks.{i}."
        s.update({f"{b}norm1.weight": (d,), **{f"{b}attn.{p}.weight": (d, d) for p in "qkvo"},
                  f"{b}norm2.weight": (d,), f"{b}ffn.gate.0.weight": (f, d), f"{b}ffn.fc1.weight": (f, d),
                  f"{b}ffn.fc2.weight": (d, f), f"{b}pos_embedding.embedding.weight": (c["buckets"], c["heads"])})
    s["norm.weight"] = (d,)
    return s


def _dense(name: str, shape: Shape, dtype: str = "BF16") -> TensorSpec:
    """Init rule for dense tensors: modulation N(0, 1/dim), bias 0, norms 1, weights 0.5/sqrt(fan_in)."""
    if name.endswith("modulation"):
        return TensorSpec(name, shape, dtype, "normal", shape[-1] ** -0.5)
    if name.endswith(".bias"):
        return TensorSpec(name, shape, dtype, "zeros")
    if name.endswith(".gamma") or len(shape) == 1:
        return TensorSpec(name, shape, dtype, "ones")
    return TensorSpec(name, shape, dtype, "normal", 0.5 / math.sqrt(math.prod(shape[1:])))


#: Weight formats a file name can say, and the safetensors dtype of their dense tensors (and of every tensor but
#: the Linear weights in an fp8 format).
FORMAT_DTYPES: Mapping[str, str] = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "fp8_scaled": "BF16",
                                    "fp8_e4m3fn": "BF16", "fp8_e5m2": "BF16"}
_DENSE_DTYPES = FORMAT_DTYPES
PLAIN_FP8: Mapping[str, str] = {"fp8_e4m3fn": "F8_E4M3", "fp8_e5m2": "F8_E5M2"}


def _linear(name: str, shape: Shape, fmt: str) -> list[TensorSpec]:
    """A Linear weight: dense, plain fp8 (fp8_e4m3fn, fp8_e5m2), or fp8 values plus a float32 per-tensor scale
    (fp8_scaled)."""
    std = 0.5 / math.sqrt(math.prod(shape[1:]))
    if fmt in PLAIN_FP8:
        return [TensorSpec(name, shape, PLAIN_FP8[fmt], "normal", std)]
    if fmt != "fp8_scaled":
        return [_dense(name, shape, _DENSE_DTYPES[fmt])]
    return [TensorSpec(name, shape, "F8_E4M3", "fp8"),
            TensorSpec(name[: -len(".weight")] + ".scale_weight", (), "F32", "const", std / FP8_SPREAD)]


def _marker(fmt: str, fp8_matmul: str) -> list[TensorSpec]:
    """The top-level scaled_fp8 marker: empty lets ComfyUI use fp8 matmuls, 2 elements asks for bf16."""
    if fmt != "fp8_scaled":
        return []
    return [TensorSpec("scaled_fp8", (0 if fp8_matmul == "fast" else 2,), "F8_E4M3", "zeros")]


def dit_specs(p: Preset, fp8_matmul: str = "fast") -> list[TensorSpec]:
    """The DiT file: every 2-D .weight is a Linear in the preset's format, the rest bf16."""
    specs = _marker(p.weight_format, fp8_matmul)
    for name, shape in dit_shapes(p.dim, p.ffn_dim, p.layers, in_dim=p.in_dim, out_dim=p.out_dim).items():
        is_linear = name.endswith(".weight") and len(shape) == 2
        dense = _DENSE_DTYPES[p.weight_format]
        specs += _linear(name, shape, p.weight_format) if is_linear else [_dense(name, shape, dense)]
    return specs


def vae22_shapes(dim: int = 160, dec_dim: int = 256, z_dim: int = 48) -> dict[str, Shape]:
    """Tensor names/shapes of the Wan 2.2 VAE (patchified 12-channel input/output, residual down/up blocks)."""
    mult, down_t = (1, 2, 4, 4), (False, True, True)
    s: dict[str, Shape] = {}

    def conv3(name: str, cout: int, cin: int, k: Shape) -> None:
        s.update({name + ".weight": (cout, cin, *k), name + ".bias": (cout,)})

    def res(p: str, cin: int, cout: int) -> None:
        s.update({p + "residual.0.gamma": (cin, 1, 1, 1), p + "residual.3.gamma": (cout, 1, 1, 1)})
        conv3(p + "residual.2", cout, cin, (3, 3, 3))
        conv3(p + "residual.6", cout, cout, (3, 3, 3))
        if cin != cout:
            conv3(p + "shortcut", cout, cin, (1, 1, 1))

    def middle(p: str, c: int) -> None:
        res(p + "middle.0.", c, c)
        s[p + "middle.1.norm.gamma"] = (c, 1, 1)
        conv3(p + "middle.1.to_qkv", 3 * c, c, (1, 1))
        conv3(p + "middle.1.proj", c, c, (1, 1))
        res(p + "middle.2.", c, c)

    dims = [dim * m for m in (1, *mult)]
    conv3("encoder.conv1", dims[0], 12, (3, 3, 3))
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        p = f"encoder.downsamples.{i}.downsamples."
        for j in range(2):
            res(f"{p}{j}.", cin if j == 0 else cout, cout)
        if i < len(mult) - 1:
            conv3(f"{p}2.resample.1", cout, cout, (3, 3))
            if down_t[i]:
                conv3(f"{p}2.time_conv", cout, cout, (3, 1, 1))
    middle("encoder.", dims[-1])
    s["encoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv3("encoder.head.2", z_dim * 2, dims[-1], (3, 3, 3))
    conv3("conv1", z_dim * 2, z_dim * 2, (1, 1, 1))
    conv3("conv2", z_dim, z_dim, (1, 1, 1))
    dims = [dec_dim * m for m in (mult[-1], *reversed(mult))]
    conv3("decoder.conv1", dims[0], z_dim, (3, 3, 3))
    middle("decoder.", dims[0])
    up_t = down_t[::-1]
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        p = f"decoder.upsamples.{i}.upsamples."
        for j in range(3):
            res(f"{p}{j}.", cin if j == 0 else cout, cout)
        if i < len(mult) - 1:
            conv3(f"{p}3.resample.1", cout, cout, (3, 3))
            if up_t[i]:
                conv3(f"{p}3.time_conv", cout * 2, cout, (3, 1, 1))
    s["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
    conv3("decoder.head.2", 12, dims[-1], (3, 3, 3))
    return s


def vae_specs(p: Preset) -> list[TensorSpec]:
    shapes = vae22_shapes(p.vae_dim) if p.family == "ti2v_5b" else vae_shapes(p.vae_dim)
    return [_dense(n, s) for n, s in shapes.items()]


def lora_specs(p: Preset, rank: int) -> list[TensorSpec]:
    """LightX2V-shaped LoRA: lora_down (rank x in), lora_up (out x rank), alpha for each block Linear."""
    specs: list[TensorSpec] = []
    for name, shape in dit_shapes(p.dim, p.ffn_dim, p.layers).items():
        if name.startswith("blocks.") and name.endswith(".weight") and len(shape) == 2:
            layer, (out_f, in_f) = "diffusion_model." + name[: -len(".weight")], shape
            specs += [TensorSpec(layer + ".alpha", (), "F32", "const", float(rank)),
                      TensorSpec(layer + ".lora_down.weight", (rank, in_f), "F32", "normal", in_f ** -0.5),
                      TensorSpec(layer + ".lora_up.weight", (out_f, rank), "F32", "normal", 1e-3)]
    return specs


def text_encoder_specs(kind: str, tokenizer_bytes: int, fp8_matmul: str = "fast",
                       fmt: str = "fp8_scaled") -> list[TensorSpec]:
    """UMT5-XXL: 'full' writes every weight (Linear weights in `fmt`: fp8_scaled, fp16, bf16, ...); 'stub' only
    the tokenizer, norms, position biases and the one tensor ComfyUI detects UMT5-XXL by (ComfyUI allocates the
    rest unloaded)."""
    specs = [TensorSpec("spiece_model", (tokenizer_bytes,), "U8", "blob")]
    shapes = umt5_shapes()
    dense = FORMAT_DTYPES[fmt]
    if kind == "stub":
        detect = "encoder.block.23.layer.1.DenseReluDense.wi_1.weight"
        keep = [n for n in shapes if n.endswith(("layer_norm.weight", "relative_attention_bias.weight"))]
        shapes = {n: shapes[n] for n in keep}
        specs.append(TensorSpec(detect, umt5_shapes()[detect], "F8_E4M3", "zeros"))
    else:
        specs += _marker(fmt, fp8_matmul)
    for name, shape in shapes.items():
        if name == "shared.weight":
            specs.append(TensorSpec(name, shape, dense, "normal", 1.0))
        elif name.endswith("relative_attention_bias.weight"):
            specs.append(TensorSpec(name, shape, dense, "normal", 0.1))
        elif len(shape) == 1:
            specs.append(TensorSpec(name, shape, dense, "ones"))
        else:
            specs += _linear(name, shape, fmt)
    return specs


# ----------------------------------------------------------------------------- layouts by kind
#
# A layout is a small JSON-able dict that says which file to write: {"kind": ..., its sizes, "format": ...}.
# The plugin infers one for every model file a workflow names (synth_plan.py), the writer turns it into tensors
# here (layout_specs), and a file's stamp holds the digest of its layout, so a second session reuses it.

#: Wan DiT sizes: tiny stand-ins for the CPU, and the real 14B, 5B and 1.3B models.
DIT_SIZES: Mapping[str, tuple[int, int, int]] = {"tiny": (128, 256, 2), "14B": (5120, 13824, 40),
                                                 "5B": (3072, 14336, 30), "1.3B": (1536, 8960, 30)}
S2V_INJECT_LAYERS = 12  # WanModel_S2V's audio_inject_layers [0, 4, ..., 39]: one injector each
S2V_AUDIO_DIM, S2V_AUDIO_LAYERS, S2V_AUDIO_TOKENS = 1024, 25, 4  # wav2vec2-large features, 24 layers + input
CLIP_VISION_DIM = 1280  # the ViT-H/14 image features an i2v model's img_emb projects


class TensorDef(NamedTuple):
    """One tensor of a layout: name, shape, and what it is (linear: a Linear weight, fp8 in an fp8 format;
    dense: anything else; ones: a scale that must start at 1; blur: a [1, 3, 3, 1] blur kernel)."""

    name: str
    shape: Shape
    role: str = "dense"


def _add(out: list[TensorDef], prefix: str, shape: Shape, role: str = "dense", bias: int | None = None) -> None:
    """prefix.weight (and prefix.bias of `bias` elements)."""
    out.append(TensorDef(prefix + ".weight", shape, role))
    if bias is not None:
        out.append(TensorDef(prefix + ".bias", (bias,)))


def _wan_base(dim: int, ffn: int, layers: int, in_dim: int, out_dim: int, clip: bool) -> list[TensorDef]:
    """WanModel: patch and text/time embeddings, the blocks, the head, and img_emb where the model takes CLIP
    vision features (clip). Every 2-D weight here is a Linear."""
    shapes = dit_shapes(dim, ffn, layers, in_dim=in_dim, out_dim=out_dim)
    out: list[TensorDef] = []
    for name, shape in shapes.items():
        out.append(TensorDef(name, shape, "linear" if name.endswith(".weight") and len(shape) == 2 else "dense"))
        if clip and name.endswith(".cross_attn.norm_k.weight"):
            block = name[: -len(".norm_k.weight")]
            _add(out, block + ".k_img", (dim, dim), "linear", dim)
            _add(out, block + ".v_img", (dim, dim), "linear", dim)
            out.append(TensorDef(block + ".norm_k_img.weight", (dim,)))
    if clip:
        c = CLIP_VISION_DIM
        _add(out, "img_emb.proj.0", (c,), bias=c)
        _add(out, "img_emb.proj.1", (c, c), "linear", c)
        _add(out, "img_emb.proj.3", (dim, c), "linear", dim)
        _add(out, "img_emb.proj.4", (dim,), bias=dim)
    return out


def _s2v_extras(dim: int) -> list[TensorDef]:
    """WanModel_S2V's audio encoder, pose encoder, audio injectors and frame packer (ComfyUI's defaults)."""
    out: list[TensorDef] = [TensorDef("trainable_cond_mask.weight", (3, dim)),
                            TensorDef("casual_audio_encoder.weights", (1, S2V_AUDIO_LAYERS, 1, 1), "ones")]
    enc, a, tokens = "casual_audio_encoder.encoder.", S2V_AUDIO_DIM, S2V_AUDIO_TOKENS
    _add(out, enc + "conv1_local.conv", (dim // 4 * tokens, a, 3), bias=dim // 4 * tokens)
    _add(out, enc + "conv1_global.conv", (dim // 4, a, 3), bias=dim // 4)
    _add(out, enc + "conv2.conv", (dim // 2, dim // 4, 3), bias=dim // 2)
    _add(out, enc + "conv3.conv", (dim, dim // 2, 3), bias=dim)
    _add(out, enc + "final_linear", (dim, dim), "linear", dim)
    out.append(TensorDef(enc + "padding_tokens", (1, 1, 1, dim)))
    _add(out, "cond_encoder", (dim, 16, 1, 2, 2), bias=dim)
    for i in range(S2V_INJECT_LAYERS):
        p = f"audio_injector.injector.{i}."
        for q in "qkvo":
            _add(out, p + q, (dim, dim), "linear", dim)
        out += [TensorDef(p + "norm_q.weight", (dim,)), TensorDef(p + "norm_k.weight", (dim,))]
    for i in range(S2V_INJECT_LAYERS):
        _add(out, f"audio_injector.injector_adain_layers.{i}.linear", (2 * dim, dim), "linear", 2 * dim)
    for name, k in (("proj", (1, 2, 2)), ("proj_2x", (2, 4, 4)), ("proj_4x", (4, 8, 8))):
        _add(out, f"frame_packer.{name}", (dim, 16, *k), bias=dim)
    return out


def _conv_layer(out: list[TensorDef], p: str, cin: int, cout: int, k: int, downsample: bool = False,
                activate: bool = True) -> None:
    """The animate motion encoder's StyleGAN ConvLayer: [Blur,] EqualConv2d[, FusedLeakyReLU]."""
    i = 0
    if downsample:
        out.append(TensorDef(f"{p}.0.kernel", (4, 4), "blur"))
        i = 1
    out.append(TensorDef(f"{p}.{i}.weight", (cout, cin, k, k)))
    if activate:
        out.append(TensorDef(f"{p}.{i + 1}.bias", (1, cout, 1, 1)))


def _animate_extras(dim: int, layers: int) -> list[TensorDef]:
    """AnimateWanModel's pose embedding, motion encoder, face adapter (a block per 5 layers) and face encoder."""
    out: list[TensorDef] = []
    _add(out, "pose_patch_embedding", (dim, 16, 1, 2, 2), bias=dim)
    net = "motion_encoder.enc.net_app.convs."
    _conv_layer(out, net + "0", 3, 32, 1)
    for i, (cin, cout) in enumerate(((32, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512),
                                     (512, 512)), start=1):
        _conv_layer(out, f"{net}{i}.conv1", cin, cin, 3)
        _conv_layer(out, f"{net}{i}.conv2", cin, cout, 3, downsample=True)
        _conv_layer(out, f"{net}{i}.skip", cin, cout, 1, downsample=True, activate=False)
    out.append(TensorDef(net + "8.weight", (512, 512, 4, 4)))
    for i, width in enumerate((512, 512, 512, 512, 20)):
        _add(out, f"motion_encoder.enc.fc.{i}", (width, 512), bias=width)
    out.append(TensorDef("motion_encoder.dec.direction.weight", (512, 20)))
    head_dim = dim // max(1, dim // 128)
    for i in range(layers // 5):
        p = f"face_adapter.fuser_blocks.{i}."
        _add(out, p + "linear1_kv", (2 * dim, dim), "linear", 2 * dim)
        _add(out, p + "linear1_q", (dim, dim), "linear", dim)
        _add(out, p + "linear2", (dim, dim), "linear", dim)
        out += [TensorDef(p + "q_norm.weight", (head_dim,)), TensorDef(p + "k_norm.weight", (head_dim,))]
    _add(out, "face_encoder.conv1_local.conv", (4096, 512, 3), bias=4096)
    _add(out, "face_encoder.conv2.conv", (1024, 1024, 3), bias=1024)
    _add(out, "face_encoder.conv3.conv", (1024, 1024, 3), bias=1024)
    _add(out, "face_encoder.out_proj", (dim, 1024), "linear", dim)
    out.append(TensorDef("face_encoder.padding_tokens", (1, 1, 1, dim)))
    return out


def wan_dit_tensors(layout: Mapping[str, Any]) -> list[TensorDef]:
    """Every tensor of a Wan DiT layout: {dim, ffn_dim, layers, in_dim, out_dim, clip, ref_conv, cam_adapter,
    extra ("", "s2v", "animate")}."""
    dim, ffn, layers = int(layout["dim"]), int(layout["ffn_dim"]), int(layout["layers"])
    out = _wan_base(dim, ffn, layers, int(layout["in_dim"]), int(layout["out_dim"]), bool(layout.get("clip")))
    if layout.get("ref_conv"):
        _add(out, "ref_conv", (dim, int(layout["ref_conv"]), 2, 2), bias=dim)
    if layout.get("cam_adapter"):
        _add(out, "control_adapter.conv", (dim, int(layout["cam_adapter"]) * 64, 2, 2), bias=dim)
        for conv in ("conv1", "conv2"):
            _add(out, f"control_adapter.residual_blocks.0.{conv}", (dim, dim, 3, 3), bias=dim)
    extra = layout.get("extra") or ""
    if extra == "s2v":
        out += _s2v_extras(dim)
    elif extra == "animate":
        out += _animate_extras(dim, layers)
    elif extra:
        raise ValueError(f"unknown Wan DiT extra {extra!r}; known: s2v, animate")
    return out


def clip_vision_h_tensors() -> list[TensorDef]:
    """OpenCLIP ViT-H/14 vision tower as ComfyUI's CLIPVisionModelProjection loads it (clip_vision_h)."""
    d, ff, layers, patch, positions = 1280, 5120, 32, 14, 257
    out = [TensorDef("vision_model.embeddings.class_embedding", (d,)),
           TensorDef("vision_model.embeddings.patch_embedding.weight", (d, 3, patch, patch)),
           TensorDef("vision_model.embeddings.position_embedding.weight", (positions, d))]
    _add(out, "vision_model.pre_layrnorm", (d,), bias=d)
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _add(out, p + "self_attn." + proj, (d, d), "linear", d)
        _add(out, p + "layer_norm1", (d,), bias=d)
        _add(out, p + "mlp.fc1", (ff, d), "linear", ff)
        _add(out, p + "mlp.fc2", (d, ff), "linear", d)
        _add(out, p + "layer_norm2", (d,), bias=d)
    _add(out, "vision_model.post_layernorm", (d,), bias=d)
    out.append(TensorDef("visual_projection.weight", (1024, d), "linear"))
    return out


def wav2vec2_large_tensors() -> list[TensorDef]:
    """wav2vec2-large (stable layer norm, conv bias) as ComfyUI's audio encoder loads it."""
    d, conv, layers = 1024, 512, 24
    out: list[TensorDef] = []
    for i, (cin, k) in enumerate(((1, 10), (conv, 3), (conv, 3), (conv, 3), (conv, 3), (conv, 2), (conv, 2))):
        p = f"feature_extractor.conv_layers.{i}."
        _add(out, p + "conv", (conv, cin, k), bias=conv)
        _add(out, p + "layer_norm", (conv,), bias=conv)
    _add(out, "feature_projection.layer_norm", (conv,), bias=conv)
    _add(out, "feature_projection.projection", (d, conv), "linear", d)
    out.append(TensorDef("masked_spec_embed", (d,)))
    p = "encoder.pos_conv_embed.conv."
    out += [TensorDef(p + "bias", (d,)), TensorDef(p + "parametrizations.weight.original0", (1, 1, 128)),
            TensorDef(p + "parametrizations.weight.original1", (d, d // 16, 128))]
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _add(out, p + "attention." + proj, (d, d), "linear", d)
        _add(out, p + "layer_norm", (d,), bias=d)
        _add(out, p + "feed_forward.intermediate_dense", (4 * d, d), "linear", 4 * d)
        _add(out, p + "feed_forward.output_dense", (d, 4 * d), "linear", d)
        _add(out, p + "final_layer_norm", (d,), bias=d)
    _add(out, "encoder.layer_norm", (d,), bias=d)
    return out


def lora_targets(blocks: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(layer, out, in) of the Linear layers a LightX2V-style LoRA patches: every block Linear of a model whose
    blocks are {dim, ffn_dim, layers, clip} (what else the model has does not change them)."""
    found = []
    model = {"kind": "wan_dit", "in_dim": 16, "out_dim": 16, **blocks}
    for t in wan_dit_tensors(model):
        if t.role == "linear" and t.name.startswith("blocks."):
            found.append((t.name[: -len(".weight")], t.shape[0], t.shape[1]))
    return found


def _fill(t: TensorDef, dtype: str) -> TensorSpec:
    if t.role == "ones":
        return TensorSpec(t.name, t.shape, dtype, "ones")
    if t.role == "blur":
        return TensorSpec(t.name, t.shape, dtype, "blur")
    return _dense(t.name, t.shape, dtype)


def _tensor_specs(defs: Sequence[TensorDef], fmt: str, fp8_matmul: str) -> list[TensorSpec]:
    """Tensors in a weight format: fp8_scaled Linear weights are fp8 with a per-tensor scale (and the file
    gets the scaled_fp8 marker), fp8_e4m3fn/fp8_e5m2 ones plain fp8, every other tensor the dense dtype."""
    if fmt not in FORMAT_DTYPES:
        raise ValueError(f"unknown weight format {fmt!r}; known: {', '.join(FORMAT_DTYPES)}")
    dense = FORMAT_DTYPES[fmt]
    specs = _marker(fmt, fp8_matmul)
    for t in defs:
        specs += _linear(t.name, t.shape, fmt) if t.role == "linear" else [_fill(t, dense)]
    return specs


def layout_specs(layout: Mapping[str, Any], fp8_matmul: str = "fast", tokenizer_bytes: int = 0) -> list[TensorSpec]:
    """The tensors of a layout, in write order (a GGUF layout's are gguf_specs)."""
    if is_gguf(layout):
        raise ValueError("a GGUF layout is not a safetensors file; its tensors are gguf_specs(layout)")
    kind, fmt = layout.get("kind"), str(layout.get("format", "bf16"))
    if kind == "wan_dit":
        return _tensor_specs(wan_dit_tensors(layout), fmt, fp8_matmul)
    if kind == "wan21_vae":
        return [_dense(n, s, FORMAT_DTYPES[fmt]) for n, s in vae_shapes(int(layout["dim"])).items()]
    if kind == "wan22_vae":
        return [_dense(n, s, FORMAT_DTYPES[fmt]) for n, s in vae22_shapes().items()]
    if kind == "clip_vision_h":
        return _tensor_specs(clip_vision_h_tensors(), fmt, fp8_matmul)
    if kind == "wav2vec2_large":
        return _tensor_specs(wav2vec2_large_tensors(), fmt, fp8_matmul)
    if kind == "umt5_xxl":
        return text_encoder_specs("full", tokenizer_bytes, fp8_matmul, fmt)
    if kind == "wanvideo_t5":
        dtype = FORMAT_DTYPES[fmt]
        return [TensorSpec(n, sh, dtype, "normal", 1.0) if n == "token_embedding.weight" else
                TensorSpec(n, sh, dtype, "normal", 0.1) if ".pos_embedding." in n else _dense(n, sh, dtype)
                for n, sh in wanvideo_t5_shapes().items()]
    if kind == "lora":
        rank, dtype = int(layout["rank"]), FORMAT_DTYPES[fmt]
        specs: list[TensorSpec] = []
        for layer, out_f, in_f in lora_targets(layout["blocks"]):
            key = "diffusion_model." + layer
            specs += [TensorSpec(key + ".alpha", (), "F32", "const", float(rank)),
                      TensorSpec(key + ".lora_down.weight", (rank, in_f), dtype, "normal", in_f ** -0.5),
                      TensorSpec(key + ".lora_up.weight", (out_f, rank), dtype, "normal", 1e-3)]
        return specs
    raise ValueError(f"unknown layout kind {kind!r}")


def layout_digest(layout: Mapping[str, Any], fp8_matmul: str = "fast") -> str:
    """What a file's stamp holds: the generator version and the layout (its tensors follow from them)."""
    body = json.dumps({"version": SYNTH_VERSION, "layout": layout, "fp8_matmul": fp8_matmul}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def layout_bytes(layout: Mapping[str, Any], fp8_matmul: str = "fast", tokenizer_bytes: int = 0) -> int:
    """The file size the layout writes (a text encoder's tokenizer blob aside)."""
    if is_gguf(layout):
        return gguf_size(layout)
    return safetensors_size(layout_specs(layout, fp8_matmul, tokenizer_bytes))


# ----------------------------------------------------------------------------- GGUF (city96/ComfyUI-GGUF)
#
# A Wan DiT layout with "container": "gguf" is written as ComfyUI-GGUF's UnetLoaderGGUF reads the QuantStack and
# city96 files: architecture "wan", the tensors of the safetensors layout under the same names, each in the GGML
# type the file's type gives it the way their tools do (ComfyUI-GGUF's tools/convert.py, then llama-quantize with
# its lcpp.patch): 1-D tensors, the modulations, small tensors and the 5-D patch embedding in F32; the embeddings,
# the head and img_emb unquantized (F16, BF16 in a BF16 file); the block Linear weights in the file's type, with
# the attention values and the second feed-forward Linear a step higher in the mixed K types (Q4_K_M: Q6_K), and
# F16 where a row does not fill whole blocks. The pure parts below need only the stdlib; the writer needs numpy and
# the gguf package (ComfyUI-GGUF's own requirement), in ComfyUI's interpreter.

#: GGML tensor types: (elements per block, bytes per block), as gguf.GGML_QUANT_SIZES has them.
GGML_BLOCKS: Mapping[str, tuple[int, int]] = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22),
    "Q5_1": (32, 24), "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210)}
#: A GGUF file's type, as its name says it -> (the GGML type of its block weights, gguf.LlamaFileType value).
GGUF_FILE_TYPES: Mapping[str, tuple[str, int]] = {
    "F32": ("F32", 0), "F16": ("F16", 1), "Q4_0": ("Q4_0", 2), "Q4_1": ("Q4_1", 3), "Q8_0": ("Q8_0", 7),
    "Q5_0": ("Q5_0", 8), "Q5_1": ("Q5_1", 9), "Q2_K": ("Q2_K", 10), "Q3_K_S": ("Q3_K", 11), "Q3_K_M": ("Q3_K", 12),
    "Q3_K_L": ("Q3_K", 13), "Q4_K_S": ("Q4_K", 14), "Q4_K_M": ("Q4_K", 15), "Q5_K_S": ("Q5_K", 16),
    "Q5_K_M": ("Q5_K", 17), "Q6_K": ("Q6_K", 18), "BF16": ("BF16", 32)}
#: Types gguf.quants quantizes (the K types it only reads: their blocks are built here).
GGUF_QUANTIZABLE = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"})
#: Tensors llama-quantize leaves unquantized in a Wan model (ComfyUI-GGUF's lcpp.patch).
GGUF_UNQUANTIZED = ("modulation", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.",
                    "img_emb.", "head.")
GGUF_ALIGNMENT = 32
GGUF_TINY_DIT = (256, 512, 2)  # the smallest width whose every block Linear row holds whole K-type blocks


class GGUFSpec(NamedTuple):
    """One tensor of a GGUF file: name, shape (PyTorch order), GGML type, and how to fill it (as TensorSpec)."""

    name: str
    shape: Shape
    qtype: str
    init: str
    value: float = 0.0

    @property
    def nbytes(self) -> int:
        block, size = GGML_BLOCKS[self.qtype]
        return math.prod(self.shape) // block * size


def is_gguf(layout: Mapping[str, Any]) -> bool:
    """True for a layout written as a GGUF file."""
    return layout.get("container") == "gguf"


def _gguf_weight_type(name: str, file_type: str, values_seen: int) -> str:
    """The GGML type llama-quantize gives a block Linear weight of a Wan model (lcpp.patch's img_tensor_get_type)."""
    main = GGUF_FILE_TYPES[file_type][0]
    if name.endswith(".v.weight"):  # attention values
        return {"Q2_K": "Q3_K", "Q3_K_M": "Q5_K" if values_seen < 2 else "Q4_K", "Q3_K_L": "Q5_K",
                "Q4_K_M": "Q6_K", "Q5_K_M": "Q6_K",
                "Q4_K_S": "Q5_K" if values_seen < 4 else "Q4_K"}.get(file_type, main)
    if name.endswith(".ffn.2.weight"):  # the feed-forward's second Linear
        return {"Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "Q4_K_S": "Q5_K", "Q4_K_M": "Q6_K", "Q5_K_M": "Q6_K",
                "Q4_0": "Q4_1", "Q5_0": "Q5_1"}.get(file_type, main)
    return main


#: ComfyUI-GGUF's T5_SD_MAP the other way: ComfyUI's UMT5 names -> the llama.cpp names of a t5encoder GGUF file.
UMT5_GGUF_NAMES: tuple[tuple[str, str], ...] = (
    ("encoder.block.", "enc.blk."), ("encoder.final_layer_norm", "enc.output_norm"), ("shared", "token_embd"),
    ("layer.0.SelfAttention.relative_attention_bias", "attn_rel_b"), ("layer.0.SelfAttention.q", "attn_q"),
    ("layer.0.SelfAttention.k", "attn_k"), ("layer.0.SelfAttention.v", "attn_v"),
    ("layer.0.SelfAttention.o", "attn_o"), ("layer.0.layer_norm", "attn_norm"),
    ("layer.1.DenseReluDense.wi_0", "ffn_gate"), ("layer.1.DenseReluDense.wi_1", "ffn_up"),
    ("layer.1.DenseReluDense.wo", "ffn_down"), ("layer.1.layer_norm", "ffn_norm"))


def _umt5_gguf_specs(file_type: str) -> list[GGUFSpec]:
    """UMT5-XXL's encoder as a t5encoder GGUF file (city96's umt5-xxl-encoder-*.gguf): llama.cpp's names, norms in
    F32, the relative position biases unquantized (F16), every other weight in the file's type, the attention
    values and ffn_down a step higher in the mixed K types (llama.cpp raises some of their layers)."""
    base = {"BF16": "BF16", "F32": "F32"}.get(file_type, "F16")
    out: list[GGUFSpec] = []
    for name, shape in umt5_shapes().items():
        for ours, theirs in UMT5_GGUF_NAMES:
            name = name.replace(ours, theirs)
        if len(shape) == 1:
            out.append(GGUFSpec(name, shape, "F32", "ones"))
        elif name.endswith("attn_rel_b.weight"):
            out.append(GGUFSpec(name, shape, base, "normal", 0.1))
        else:
            qtype = _gguf_weight_type(name.replace("attn_v.", ".v.").replace("ffn_down.", ".ffn.2."), file_type, 0)
            std = 1.0 if name.startswith("token_embd") else 0.5 / math.sqrt(shape[-1])
            out.append(GGUFSpec(name, shape, qtype if shape[-1] % GGML_BLOCKS[qtype][0] == 0 else base, "normal",
                                std))
    return out


@functools.lru_cache(maxsize=1)
def umt5_gguf_vocab() -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """A UMT5-sized (256,384) SentencePiece vocabulary as GGUF tokenizer metadata (tokens, scores, types): pad,
    eos, unk, the 256 byte pieces (byte fallback), the words of CORPUS and its letters, the rest unused extra ids.
    ComfyUI-GGUF rebuilds a tokenizer from it; only a vocabulary of the real size makes it do so."""
    tokens = ["<pad>", "</s>", "<unk>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [3, 3, 2, *([6] * 256)]  # CONTROL, UNKNOWN, BYTE
    words = CORPUS.split()
    for piece in [*dict.fromkeys("\u2581" + w for w in words), "\u2581", *sorted(set("".join(words)))]:
        if piece not in tokens:
            tokens.append(piece)
            types.append(1)  # NORMAL
    scores = [0.0] * 259 + [-(i + 1) / 100 for i in range(len(tokens) - 259)]
    extra = UMT5_XXL["vocab"] - len(tokens)
    tokens += [f"<extra_id_{i}>" for i in range(extra)]
    types += [1] * extra
    scores += [-1e4] * extra
    return tuple(tokens), tuple(scores), tuple(types)


def gguf_specs(layout: Mapping[str, Any]) -> list[GGUFSpec]:
    """The tensors of a GGUF layout (a Wan DiT, UMT5-XXL), in write order, each with its GGML type."""
    file_type = str(layout.get("format"))
    if file_type not in GGUF_FILE_TYPES:
        raise ValueError(f"unknown GGUF file type {file_type!r}; known: {', '.join(GGUF_FILE_TYPES)}")
    if layout.get("kind") == "umt5_xxl":
        return _umt5_gguf_specs(file_type)
    if layout.get("kind") != "wan_dit":
        raise ValueError(f"the GGUF writer writes Wan DiTs and UMT5-XXL; not {layout.get('kind')!r}")
    base = {"BF16": "BF16", "F32": "F32"}.get(file_type, "F16")
    out: list[GGUFSpec] = []
    values_seen = 0
    for t in wan_dit_tensors(layout):
        filled = _fill(t, "F32")
        n = math.prod(t.shape)
        if len(t.shape) <= 1 or len(t.shape) > 4 or n <= 1024 or "modulation" in t.name:
            qtype = "F32"
        elif t.role == "linear" and not any(k in t.name for k in GGUF_UNQUANTIZED):
            qtype = _gguf_weight_type(t.name, file_type, values_seen)
            values_seen += t.name.endswith(".v.weight")
            if t.shape[-1] % GGML_BLOCKS[qtype][0]:
                qtype = base  # llama-quantize's fallback for a row that does not fill whole blocks
        else:
            qtype = base
        out.append(GGUFSpec(t.name, t.shape, qtype, filled.init, filled.value))
    return out


def _gguf_string(text: str) -> int:
    return 8 + len(text.encode())


def gguf_metadata(layout: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """The key-value metadata as (key, kind, value): the architecture ComfyUI-GGUF checks ("wan"; "t5encoder" with
    the tokenizer for UMT5), the file type and quantization version, as their tools write them."""
    file_type = str(layout["format"])
    arch = "t5encoder" if layout.get("kind") == "umt5_xxl" else "wan"
    kv: list[tuple[str, str, Any]] = [("general.architecture", "str", arch), ("general.quantization_version", "u32", 2),
                                      ("general.file_type", "u32", GGUF_FILE_TYPES[file_type][1])]
    if arch == "t5encoder":
        tokens, scores, types = umt5_gguf_vocab()
        kv += [("tokenizer.ggml.model", "str", "t5"), ("tokenizer.ggml.tokens", "strs", tokens),
               ("tokenizer.ggml.scores", "f32s", scores), ("tokenizer.ggml.token_type", "i32s", types),
               ("tokenizer.ggml.add_space_prefix", "bool", True),
               ("tokenizer.ggml.remove_extra_whitespaces", "bool", True),
               ("tokenizer.ggml.eos_token_id", "u32", 1), ("tokenizer.ggml.padding_token_id", "u32", 0),
               ("tokenizer.ggml.unknown_token_id", "u32", 2)]
    return kv


def _gguf_value_size(kind: str, value: Any) -> int:
    if kind == "str":
        return _gguf_string(value)
    if kind == "strs":
        return 12 + sum(_gguf_string(v) for v in value)
    if kind in ("f32s", "i32s"):
        return 12 + 4 * len(value)
    return {"u32": 4, "bool": 1}[kind]


def gguf_size(layout: Mapping[str, Any]) -> int:
    """Exact byte size of the GGUF v3 file write_gguf writes for a GGUF layout."""
    specs = gguf_specs(layout)
    size = 24  # magic, version, tensor count, key-value count
    size += sum(_gguf_string(key) + 4 + _gguf_value_size(kind, value) for key, kind, value in gguf_metadata(layout))
    size += sum(_gguf_string(t.name) + 4 + 8 * len(t.shape) + 4 + 8 for t in specs)
    pad = -size % GGUF_ALIGNMENT
    return size + pad + sum(t.nbytes + -t.nbytes % GGUF_ALIGNMENT for t in specs)


# ----------------------------------------------------------------------------- safetensors (stdlib)


def safetensors_header(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The JSON header (padded to 8 bytes) for tensors stored back to back in spec order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    off = 0
    for t in specs:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    return hb + b" " * (-len(hb) % 8)


def safetensors_size(specs: Sequence[TensorSpec]) -> int:
    """Exact byte size of the file stream_safetensors writes for specs."""
    return 8 + len(safetensors_header(specs)) + sum(t.nbytes for t in specs)


def read_safetensors_header(path: Path | str) -> dict[str, Any]:
    """Parse a .safetensors header: 8-byte little-endian length, then JSON."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        result: dict[str, Any] = json.loads(f.read(n))
        return result


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    """Write to a temporary sibling and move it into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def stream_safetensors(path: Path, specs: Sequence[TensorSpec], make: Callable[[TensorSpec], Any],
                       depth: int = 4) -> int:
    """Write specs tensor by tensor; make(spec) returns its bytes (any buffer). A writer thread
    overlaps the disk writes with making the next tensor."""
    q: queue.Queue[memoryview | None] = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []
    with _atomic(path) as f:
        hb = safetensors_header(specs)
        f.write(struct.pack("<Q", len(hb)) + hb)

        def writer() -> None:
            while (buf := q.get()) is not None:
                if not failed:
                    try:
                        f.write(buf)
                    except BaseException as e:  # keep draining so the producer never blocks
                        failed.append(e)

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        try:
            for t in specs:
                buf = memoryview(make(t)).cast("B")
                if buf.nbytes != t.nbytes:
                    raise ValueError(f"{t.name}: made {buf.nbytes} bytes, declared {t.nbytes}")
                q.put(buf)
                if failed:
                    break
        finally:
            q.put(None)
            th.join()
        if failed:
            raise failed[0]
    return path.stat().st_size


def png_bytes(width: int, height: int) -> bytes:
    """A start frame: red ramp left to right, green ramp top to bottom, blue 128 (stdlib PNG)."""
    red = bytes(x * 255 // max(1, width - 1) for x in range(width))
    raw = bytearray()
    for y in range(height):
        row = bytearray(3 * width)
        row[0::3], row[1::3], row[2::3] = red, bytes([y * 255 // max(1, height - 1)]) * width, b"\x80" * width
        raw += b"\x00" + row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- the plan


class PlannedFile(NamedTuple):
    role: str
    relpath: str
    specs: list[TensorSpec] | None  # None: not a safetensors file
    seed_offset: int


def plan(preset: str, opts: Options, tokenizer_bytes: int) -> list[PlannedFile]:
    """Every safetensors file of a set, in write order, with its tensors."""
    p, ms = _preset(preset), model_set(preset, text_encoder=opts.text_encoder, lora_rank=opts.lora_rank)
    experts = ("model",) if p.family == "ti2v_5b" else ("high", "low")
    files = [PlannedFile(r, ms.files[r], dit_specs(p, opts.fp8_matmul), i) for i, r in enumerate(experts)]
    files.append(PlannedFile("vae", ms.files["vae"], vae_specs(p), 10))
    if opts.text_encoder != "none":
        specs = text_encoder_specs(opts.text_encoder, tokenizer_bytes, opts.fp8_matmul)
        files.append(PlannedFile("text_encoder", ms.files["text_encoder"], specs, 20))
    if opts.lora_rank > 0:
        files += [PlannedFile(r, ms.files[r], lora_specs(p, opts.lora_rank), 30 + i)
                  for i, r in enumerate(("lora_high", "lora_low"))]
    return files


def planned_sizes(preset: str, opts: Options, tokenizer_bytes: int = 0) -> dict[str, int]:
    """Exact byte size of every safetensors file and the start image, without writing anything."""
    sizes = {f.relpath: safetensors_size(f.specs) for f in plan(preset, opts, tokenizer_bytes) if f.specs}
    sizes[_preset(preset).files["image"]] = len(png_bytes(*_preset(preset).image_size))
    return sizes


# ----------------------------------------------------------------------------- reuse stamp


def stamp_path(out: Path | str, preset: str) -> Path:
    return Path(out) / f".wan22-synth-{preset}.json"


def _role_files(out: Path, relpath: str) -> list[str]:
    """The files a role stands for (a dataset folder stands for the files inside it)."""
    p = out / relpath
    if p.is_dir():
        kids = (c for c in p.iterdir() if c.is_file() and not c.name.endswith(".part"))
        return sorted(f"{relpath}/{c.name}" for c in kids)
    return [relpath] if p.is_file() else []


def write_stamp(out: Path | str, ms: ModelSet, opts: Options) -> Path:
    """Record version, preset, options and each file's size, so a later session can reuse the set."""
    out = Path(out)
    files = {f: (out / f).stat().st_size for rel in ms.files.values() for f in _role_files(out, rel)}
    body = {"version": SYNTH_VERSION, "preset": ms.preset, "options": asdict(opts), "files": files}
    path = stamp_path(out, ms.preset)
    with _atomic(path) as f:
        f.write(json.dumps(body, indent=1, sort_keys=True).encode())
    return path


def stamp_matches(out: Path | str, ms: ModelSet, opts: Options) -> bool:
    """True when the stamp's version, preset and options cover the request and every file still has
    the recorded size."""
    out = Path(out)
    try:
        st = json.loads(stamp_path(out, ms.preset).read_text())
        have, files = Options(**st["options"]), dict(st["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if st.get("version") != SYNTH_VERSION or st.get("preset") != ms.preset:
        return False
    if (have.seed, have.fp8_matmul) != (opts.seed, opts.fp8_matmul):
        return False
    if opts.text_encoder not in ("none", have.text_encoder) or opts.lora_rank not in (0, have.lora_rank):
        return False
    for rel in ms.files.values():
        if not any(f == rel or f.startswith(rel + "/") for f in files):
            return False
    for f, size in files.items():
        try:
            if (out / f).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


# ----------------------------------------------------------------------------- plugin side


def script_path() -> Path:
    """This file, which ComfyUI's interpreter runs by path."""
    return Path(__file__).resolve()


def generate_command(python: str, out: Path, preset: str, *, device: str = "cpu",
                     extra: Sequence[str] = ()) -> list[str]:
    """The argv that generates a set in the interpreter `python` (ComfyUI's, which has torch)."""
    _preset(preset)
    return [str(python), str(script_path()), str(out), "--preset", preset, "--device", device, *extra]


def _option_args(opts: Options) -> list[str]:
    return ["--text-encoder", opts.text_encoder, "--lora-rank", str(opts.lora_rank),
            "--seed", str(opts.seed), "--fp8-matmul", opts.fp8_matmul]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialize generators of the same set (xdist workers, sessions side by side) with a lock file, on Linux and
    Windows alike (the plugin's side only: the script run by ComfyUI's interpreter takes no lock)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_writer(cmd: Sequence[str], python: str, timeout: float, log_path: Path | None,
                fail: Callable[..., Exception], what: str) -> str:
    """Run a writer command with its output in log_path (or a temporary file); raise fail(cause, cmd, tail)
    when it cannot start, times out or exits non-zero. Returns the tail of its output."""
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "w+b"))
        else:
            log = stack.enter_context(tempfile.TemporaryFile())

        def output() -> str:
            log.flush()
            log.seek(0)
            return _tail(log.read().decode(errors="replace"))

        try:
            rc = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                check=False).returncode
        except OSError as e:
            raise fail(f"cannot run {python!r}: {e}", cmd) from e
        except subprocess.TimeoutExpired as e:
            raise fail(f"{what} did not finish within {timeout:g} s", cmd, output()) from e
        if rc != 0:
            raise fail(f"{what} exited with code {rc}", cmd, output())
        return output()


def ensure_models(python: str, out: Path, preset: str = "tiny", *, device: str = "cpu", timeout: float = 600,
                  log_path: Path | None = None, text_encoder: str | None = None,
                  lora_rank: int = 0) -> ModelSet:
    """Generate the set under out with `python` unless a matching stamp shows it is already there."""
    from pytest_wan22.errors import SynthError

    out = Path(out)
    ms = model_set(preset, text_encoder=text_encoder, lora_rank=lora_rank)
    opts = _options(preset, text_encoder, lora_rank)
    with _lock(out / f".wan22-synth-{preset}.lock"):
        if stamp_matches(out, ms, opts):
            return ms
        cmd = generate_command(python, out, preset, device=device, extra=_option_args(opts))
        tail = _run_writer(cmd, python, timeout, log_path, SynthError.failed, "generation")
        missing = [rel for rel in ms.files.values() if not _role_files(out, rel)]
        if missing:
            raise SynthError.failed("generation ended but did not write " + ", ".join(missing), cmd, tail)
        write_stamp(out, ms, opts)
    return ms


# ----------------------------------------------------------------------------- files by layout (plugin side)
#
# A model file a workflow names is written under its own name with the layout synth_plan infers. Its stamp,
# <root>/.wan22-synth/files/<relpath>.json, holds the layout's digest and the file's size; the bytes live once per
# layout in <root>/.wan22-synth/blobs/<digest>.safetensors, hard-linked to every name with that layout (the
# high- and low-noise experts of one model share one), so a second session, or a second name, costs nothing.
# Input media (images, videos, audio) go to <root>/input/<name>, with their spec in .wan22-synth/input/.

STATE_DIR = ".wan22-synth"


class FileJob(NamedTuple):
    """A model file to have under the synthetic set's base folder: its relative path and its layout."""

    relpath: str
    layout: Mapping[str, Any]


def file_stamp_path(root: Path | str, relpath: str) -> Path:
    return Path(root) / STATE_DIR / "files" / f"{relpath}.json"


def blob_path(root: Path | str, digest: str, layout: Mapping[str, Any] | None = None) -> Path:
    """Where the bytes of a layout live once (.gguf for a GGUF layout, else .safetensors)."""
    suffix = ".gguf" if layout is not None and is_gguf(layout) else ".safetensors"
    return Path(root) / STATE_DIR / "blobs" / f"{digest}{suffix}"


def file_is_current(root: Path | str, job: FileJob, fp8_matmul: str = "fast") -> bool:
    """True when the file is there with the stamp of this layout and the stamped size."""
    try:
        st = json.loads(file_stamp_path(root, job.relpath).read_text())
        size = (Path(root) / job.relpath).stat().st_size
    except (OSError, ValueError):
        return False
    return isinstance(st, dict) and st.get("digest") == layout_digest(job.layout, fp8_matmul) and \
        st.get("bytes") == size


def foreign_file(root: Path | str, relpath: str) -> bool:
    """True for a file at relpath that this generator did not write (no stamp): it is never replaced."""
    return (Path(root) / relpath).is_file() and not file_stamp_path(root, relpath).is_file()


def _link(blob: Path, target: Path) -> None:
    """target becomes a hard link to blob (a copy where the file system has none), replaced atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(blob, tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, target)


def _write_file_stamp(root: Path, job: FileJob, fp8_matmul: str) -> None:
    body = {"version": SYNTH_VERSION, "digest": layout_digest(job.layout, fp8_matmul),
            "bytes": (root / job.relpath).stat().st_size, "layout": job.layout}
    with _atomic(file_stamp_path(root, job.relpath)) as f:
        f.write(json.dumps(body, indent=1, sort_keys=True).encode())


def jobs_command(python: str, jobs_file: Path, *, device: str = "cpu") -> list[str]:
    """The argv that writes the files and media a jobs file lists, in ComfyUI's interpreter `python`."""
    return [str(python), str(script_path()), "--jobs", str(jobs_file), "--device", device]


def ensure_files(python: str, root: Path | str, jobs: Sequence[FileJob], *, device: str = "cpu",
                 timeout: float = 600, log_path: Path | None = None, seed: int = Options.seed,
                 fp8_matmul: str = "fast") -> list[str]:
    """Have every job's file under root: reuse a current one, link a layout written before, write the rest with
    `python` (one run for all). A file this generator did not write is left alone. Returns the paths written or
    linked now."""
    from pytest_wan22.errors import SynthError

    root = Path(root)
    done: list[str] = []
    with _lock(root / STATE_DIR / "files.lock"):
        todo = [j for j in jobs if not file_is_current(root, j, fp8_matmul) and not foreign_file(root, j.relpath)]
        if not todo:
            return done
        blobs = {layout_digest(j.layout, fp8_matmul): j.layout for j in todo}
        missing = {d: layout for d, layout in blobs.items() if not blob_path(root, d, layout).is_file()}  # atomic
        if missing:
            spec = {"files": [{"path": str(blob_path(root, d, layout)), "layout": layout, "seed": seed}
                              for d, layout in missing.items()], "fp8_matmul": fp8_matmul}
            jobs_file = root / STATE_DIR / f"jobs-{os.getpid()}.json"
            jobs_file.parent.mkdir(parents=True, exist_ok=True)
            jobs_file.write_text(json.dumps(spec, indent=1))
            cmd = jobs_command(python, jobs_file, device=device)
            try:
                tail = _run_writer(cmd, python, timeout, log_path, SynthError.failed, "the writer")
            finally:
                jobs_file.unlink(missing_ok=True)
            absent = [d for d, layout in missing.items() if not blob_path(root, d, layout).is_file()]
            if absent:
                raise SynthError.failed("the writer ended but did not write " + ", ".join(
                    str(blob_path(root, d, missing[d])) for d in absent), cmd, tail)
        for j in todo:
            _link(blob_path(root, layout_digest(j.layout, fp8_matmul), j.layout), root / j.relpath)
            _write_file_stamp(root, j, fp8_matmul)
            done.append(j.relpath)
    return done


def media_stamp_path(root: Path | str, name: str) -> Path:
    return Path(root) / STATE_DIR / "input" / f"{name}.json"


def media_note(root: Path | str, name: str) -> str | None:
    """What the synthetic set wrote as input `name` (for the run record), or None where it wrote none."""
    try:
        st = json.loads(media_stamp_path(root, name).read_text())
    except (OSError, ValueError):
        return None
    return str(st.get("describe")) if isinstance(st, dict) and st.get("describe") else None


def ensure_media(python: str, root: Path | str, jobs: Sequence[Mapping[str, Any]], *, timeout: float = 300,
                 log_path: Path | None = None) -> list[str]:
    """Have every media job's file in <root>/input (name, kind, size, frames, fps, sample rate, seconds, and
    `describe`, said in the run record); a file whose spec changed is written again. Returns the names written."""
    from pytest_wan22.errors import SynthError

    root = Path(root)
    with _lock(root / STATE_DIR / "input.lock"):
        todo = []
        for job in jobs:
            try:
                st = json.loads(media_stamp_path(root, job["name"]).read_text())
            except (OSError, ValueError):
                st = None
            if not (isinstance(st, dict) and st.get("spec") == dict(job) and (root / "input" / job["name"]).is_file()):
                todo.append(dict(job, path=str(root / "input" / job["name"])))
        if not todo:
            return []
        jobs_file = root / STATE_DIR / f"media-{os.getpid()}.json"
        jobs_file.parent.mkdir(parents=True, exist_ok=True)
        jobs_file.write_text(json.dumps({"media": todo}, indent=1))
        cmd = jobs_command(python, jobs_file)
        try:
            tail = _run_writer(cmd, python, timeout, log_path, SynthError.failed, "the media writer")
        finally:
            jobs_file.unlink(missing_ok=True)
        for job in todo:
            if not Path(job["path"]).is_file():
                raise SynthError.failed(f"the media writer ended but did not write {job['path']}", cmd, tail)
            spec = {k: v for k, v in job.items() if k != "path"}
            with _atomic(media_stamp_path(root, job["name"])) as f:
                f.write(json.dumps({"spec": spec, "describe": job.get("describe", "")}, indent=1).encode())
    return [job["name"] for job in todo]


# ----------------------------------------------------------------------------- torch side

CORPUS = """a cat walks slowly across a sunny garden while the camera pans left
a red car drives along a wet road at night with neon lights
waves break on the rocky shore under a grey sky
the quick brown fox jumps over the lazy dog
low quality blurry static frame watermark text
a woman smiles and turns her head toward the window
slow motion close up of rain drops on a green leaf
"""


def tokenizer_blob(vocab_size: int = 200) -> bytes:
    """A tiny SentencePiece unigram model with the T5 special ids (pad 0, eos 1, unk 2)."""
    import io

    import sentencepiece as spm  # type: ignore[import-not-found, unused-ignore]

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 20), model_writer=buf, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return buf.getvalue()


def _torch_maker(device: str, seed: int, blob: bytes) -> Callable[[TensorSpec], Any]:
    """make(spec) -> a numpy uint8 view of the tensor, random numbers drawn on device."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "U8": torch.uint8}

    def make(t: TensorSpec) -> Any:
        if t.init == "blob":
            return blob
        if t.init == "blur":  # a StyleGAN blur kernel: outer([1, 3, 3, 1]) normalised
            k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=dev)
            x = torch.outer(k, k) / 64.0
        elif t.init in ("normal", "fp8"):
            x = torch.randn(t.shape, generator=gen, device=dev)
            x = x.mul_(t.value) if t.init == "normal" else x.mul_(FP8_SPREAD).clamp_(-FP8_MAX, FP8_MAX)
        else:
            x = torch.full(t.shape, {"ones": 1.0, "zeros": 0.0}.get(t.init, t.value), device=dev)
        return x.to(dtypes[t.dtype]).contiguous().reshape(-1).view(torch.uint8).cpu().numpy()

    return make


#: K-type blocks built from random bytes: the scale bytes set (offset -> bytes), the spread of the stored integer q
#: times its scale, in units of d, and dmin as a multiple of d, so that d * scale * q - dmin * min has mean 0.
_K_BLOCKS: Mapping[str, tuple[Mapping[int, bytes], float, float]] = {
    # 16 scale bytes (low nibble scale 2, high nibble min 3), q 0..3: 2q - 3 (dmin = d)
    "Q2_K": ({0: b"\x32" * 16}, 2 * 1.118, 1.0),
    # 16 signed 6-bit scales, +1 and -1 in turn (low nibbles 1 / 15, high bits 0b10 / 0b01), q -4..3
    "Q3_K": ({96: b"\x11\xff" * 4 + b"\xaa\x55" * 2}, 2.291, 0.0),
    # 8 scales and 8 mins of 6 bits, all 1, q 0..15: q - 7.5 (q 0..31: q - 15.5)
    "Q4_K": ({4: b"\x01" * 8 + b"\x11" * 4}, 4.610, 7.5),
    "Q5_K": ({4: b"\x01" * 8 + b"\x11" * 4}, 9.233, 15.5),
    # 16 signed 8-bit scales, all 1, q -32..31
    "Q6_K": ({192: b"\x01" * 16}, 18.473, 0.0),
}
_K_SCALE_AT: Mapping[str, tuple[int, int | None]] = {  # byte offsets of d and dmin (float16)
    "Q2_K": (80, 82), "Q3_K": (108, None), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208, None)}


def k_blocks(qtype: str, n_blocks: int, std: float, rng: Any) -> Any:
    """n_blocks valid blocks of a K type whose values have mean 0 and about `std` spread: random quants, fixed
    scales, a finite float16 d (gguf.quants cannot quantize the K types)."""
    import numpy as np  # type: ignore[import-not-found, unused-ignore]

    sets, spread, dmin_per_d = _K_BLOCKS[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, GGML_BLOCKS[qtype][1]), dtype=np.uint8)
    for at, values in sets.items():
        blocks[:, at:at + len(values)] = np.frombuffer(values, np.uint8)
    d = np.float16(max(std, 1e-6) / spread)
    at, at_min = _K_SCALE_AT[qtype]
    blocks[:, at:at + 2] = np.frombuffer(d.tobytes(), np.uint8)
    if at_min is not None:
        blocks[:, at_min:at_min + 2] = np.frombuffer(np.float16(float(d) * dmin_per_d).tobytes(), np.uint8)
    return blocks


def _gguf_data(t: GGUFSpec, rng: Any) -> Any:
    """The tensor's bytes in its GGML type: random normal values quantized by gguf.quants, K-type blocks built."""
    import gguf  # type: ignore[import-not-found, unused-ignore]
    import numpy as np  # type: ignore[import-not-found, unused-ignore]

    if t.qtype in _K_BLOCKS:
        data = k_blocks(t.qtype, t.nbytes // GGML_BLOCKS[t.qtype][1], t.value, rng)
        return data.reshape(-1)
    if t.init == "normal":
        x = rng.standard_normal(t.shape, dtype=np.float32) * np.float32(t.value)
    elif t.init == "blur":
        k = np.array([1.0, 3.0, 3.0, 1.0], dtype=np.float32)
        x = np.outer(k, k).reshape(t.shape) / np.float32(64.0)
    else:
        x = np.full(t.shape, {"ones": 1.0, "zeros": 0.0}.get(t.init, t.value), dtype=np.float32)
    qtype = gguf.GGMLQuantizationType[t.qtype]
    rows = x.reshape(-1, t.shape[-1]) if t.shape else x.reshape(1, 1)
    step = max(1, (1 << 24) // max(1, rows.shape[1]))  # quantize 16M values at a time
    parts = [gguf.quants.quantize(rows[i:i + step], qtype).view(np.uint8).reshape(-1)
             for i in range(0, rows.shape[0], step)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def write_gguf(path: Path, layout: Mapping[str, Any], seed: int = 0) -> int:
    """Write a GGUF layout to path (atomically), tensor by tensor; returns the file size. Needs numpy and gguf."""
    try:
        import gguf  # type: ignore[import-not-found, unused-ignore]
        import numpy as np  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise RuntimeError(f"writing {path.name} needs the gguf package in {sys.executable} (ComfyUI-GGUF's "
                           f"requirement): {sys.executable} -m pip install gguf ({exc})") from exc
    specs = gguf_specs(layout)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        metadata = gguf_metadata(layout)
        writer = gguf.GGUFWriter(path=None, arch=metadata[0][2])
        for key, kind, value in metadata[1:]:
            if kind in ("strs", "f32s", "i32s"):
                writer.add_array(key, list(value))
            elif kind == "str":
                writer.add_string(key, value)
            elif kind == "u32":
                writer.add_uint32(key, value)
            else:
                writer.add_bool(key, value)
        for t in specs:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes,
                                   raw_dtype=gguf.GGMLQuantizationType[t.qtype])
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in specs:
            data = _gguf_data(t, rng)
            if data.nbytes != t.nbytes:
                raise ValueError(f"{t.name}: made {data.nbytes} bytes of {t.qtype}, declared {t.nbytes}")
            writer.write_tensor_data(data)
        writer.close()
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    size = path.stat().st_size
    if size != gguf_size(layout):
        raise RuntimeError(f"{path}: wrote {size} bytes, expected {gguf_size(layout)}")
    return size


def _write_conditioning(folder: Path, tokens: int = 32, text_dim: int = 4096) -> None:
    """A one-sample dataset for LoadTrainingDataset: a zero text embedding (and an unused latent)."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    shard = {"latents": [{"samples": torch.zeros(1, 16, 1, 8, 8)}],
             "conditioning": [[[torch.zeros(1, tokens, text_dim), {}]]]}
    with _atomic(folder / "shard_0000.pkl") as f:
        torch.save(shard, f)
    with _atomic(folder / "metadata.json") as f:
        f.write(json.dumps({"num_samples": 1, "num_shards": 1, "shard_size": 1000}, indent=2).encode())


def generate(out: Path, preset: str, opts: Options, *, device: str = "cpu",
             timing_json: Path | None = None) -> ModelSet:
    """Write the whole set under out (needs torch); print each file's size and write time."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    ms = model_set(preset, text_encoder=opts.text_encoder, lora_rank=opts.lora_rank)
    blob = tokenizer_blob() if opts.text_encoder != "none" else b""
    timings: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    print(f"writing the {preset} set to {out} (random numbers on {device})", flush=True)

    def done(role: str, rel: str, t0: float) -> None:
        size = sum((out / f).stat().st_size for f in _role_files(out, rel))
        dt = time.perf_counter() - t0
        timings.append({"role": role, "path": rel, "bytes": size, "seconds": round(dt, 3)})
        print(f"{size:>16,d} B {dt:7.2f} s {size / max(dt, 1e-9) / 1e9:6.2f} GB/s  {rel}", flush=True)

    for f in plan(preset, opts, len(blob)):
        assert f.specs is not None
        t0 = time.perf_counter()
        make = _torch_maker(device, opts.seed + f.seed_offset, blob)
        size = stream_safetensors(out / f.relpath, f.specs, make)
        if size != safetensors_size(f.specs):
            raise RuntimeError(f"{f.relpath}: wrote {size} bytes, expected {safetensors_size(f.specs)}")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        done(f.role, f.relpath, t0)
    t0 = time.perf_counter()
    with _atomic(out / ms.files["image"]) as fh:
        fh.write(png_bytes(*_preset(preset).image_size))
    done("image", ms.files["image"], t0)
    t0 = time.perf_counter()
    _write_conditioning(out / ms.files["conditioning"])
    done("conditioning", ms.files["conditioning"], t0)
    total = time.perf_counter() - t_all
    print(f"{sum(t['bytes'] for t in timings):>16,d} B {total:7.2f} s  total", flush=True)
    if timing_json is not None:
        body = {"preset": preset, "device": device, "options": asdict(opts), "files": timings,
                "total_seconds": round(total, 3), "total_bytes": sum(t["bytes"] for t in timings)}
        timing_json.parent.mkdir(parents=True, exist_ok=True)
        timing_json.write_text(json.dumps(body, indent=1))
    write_stamp(out, ms, opts)
    return ms


def write_jobs(spec: Mapping[str, Any], *, device: str = "cpu") -> None:
    """Write what a jobs file lists (needs torch for model files, PyAV and Pillow for media): {"files": [{path,
    layout, seed}], "media": [{path, kind, ...}], "fp8_matmul"}."""
    fp8_matmul = str(spec.get("fp8_matmul", Options.fp8_matmul))
    blob = b""
    for f in spec.get("files", []):
        t0 = time.perf_counter()
        layout, path = f["layout"], Path(f["path"])
        if is_gguf(layout):
            size = write_gguf(path, layout, int(f.get("seed", Options.seed)))
            print(f"{size:>16,d} B {time.perf_counter() - t0:7.2f} s  {path} (GGUF {layout.get('format')})",
                  flush=True)
            continue
        if layout.get("kind") == "umt5_xxl" and not blob:
            blob = tokenizer_blob()
        specs = layout_specs(layout, fp8_matmul, len(blob))
        size = stream_safetensors(path, specs, _torch_maker(device, int(f.get("seed", Options.seed)), blob))
        dt = time.perf_counter() - t0
        print(f"{size:>16,d} B {dt:7.2f} s  {path} ({layout.get('kind')})", flush=True)
    for m in spec.get("media", []):
        t0 = time.perf_counter()
        write_media(m)
        print(f"{Path(m['path']).stat().st_size:>16,d} B {time.perf_counter() - t0:7.2f} s  {m['path']} "
              f"({m['kind']})", flush=True)


def _frame(width: int, height: int, i: int) -> Any:
    """An RGB frame (numpy): colour ramps that move with the frame index, so every frame differs."""
    import numpy as np  # type: ignore[import-not-found, unused-ignore]

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    r = (x + 8 * i) % 256 + 0 * y
    g = (y + 4 * i) % 256 + 0 * x
    b = np.full((height, width), (128 + 16 * i) % 256, dtype=np.float32)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


#: Containers and codecs by file extension (PyAV names).
VIDEO_FORMATS: Mapping[str, tuple[str, str]] = {".mp4": ("mp4", "libx264"), ".m4v": ("mp4", "libx264"),
                                                ".mov": ("mov", "libx264"), ".mkv": ("matroska", "libx264"),
                                                ".webm": ("webm", "libvpx-vp9"), ".avi": ("avi", "mpeg4")}
AUDIO_FORMATS: Mapping[str, tuple[str, str]] = {".mp3": ("mp3", "libmp3lame"), ".wav": ("wav", "pcm_s16le"),
                                                ".flac": ("flac", "flac"), ".ogg": ("ogg", "libvorbis"),
                                                ".opus": ("ogg", "libopus"), ".m4a": ("mp4", "aac"),
                                                ".aac": ("adts", "aac")}


def write_media(job: Mapping[str, Any]) -> Path:
    """An image, video or audio file at job["path"], in the format its extension names (atomic)."""
    path = Path(job["path"])
    ext = path.suffix.lower()
    kind = job["kind"]
    width, height = int(job.get("width", 64)), int(job.get("height", 64))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "image":
            from PIL import Image  # type: ignore[import-not-found, unused-ignore]

            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                   ".tiff": "TIFF", ".gif": "GIF"}.get(ext, "PNG")
            Image.fromarray(_frame(width, height, 0)).save(tmp, format=fmt)
        elif kind == "video":
            import av  # type: ignore[import-not-found, unused-ignore]

            container_fmt, codec = VIDEO_FORMATS.get(ext, ("mp4", "libx264"))
            fps = round(float(job.get("fps", 16)))
            with av.open(str(tmp), mode="w", format=container_fmt) as out:
                stream = out.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
                for i in range(int(job.get("frames", 1))):
                    frame = av.VideoFrame.from_ndarray(_frame(stream.width, stream.height, i), format="rgb24")
                    out.mux(stream.encode(frame))
                out.mux(stream.encode())
        elif kind == "audio":
            import av  # type: ignore[import-not-found, unused-ignore]
            import numpy as np  # type: ignore[import-not-found, unused-ignore]

            container_fmt, codec = AUDIO_FORMATS.get(ext, ("wav", "pcm_s16le"))
            rate, seconds = int(job.get("sample_rate", 16000)), float(job.get("seconds", 1.0))
            t = np.arange(int(rate * seconds), dtype=np.float32) / rate
            wave = (0.3 * np.sin(2 * np.pi * 220.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2.0 * t))).astype(np.float32)
            with av.open(str(tmp), mode="w", format=container_fmt) as out:
                stream = out.add_stream(codec, rate=rate)
                stream.layout = "mono"
                fmt = stream.codec_context.codec.audio_formats[0].name if stream.codec_context.codec.audio_formats \
                    else "s16"
                frame = av.AudioFrame.from_ndarray(wave[None, :], format="flt", layout="mono")
                frame.sample_rate = rate
                resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
                for chunk in resampler.resample(frame):
                    out.mux(stream.encode(chunk))
                out.mux(stream.encode())
        else:
            raise ValueError(f"unknown media kind {kind!r}; known: image, video, audio")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------- RIFE (frame interpolation)
#
# "RIFE VFI" (Fannovel16/ComfyUI-Frame-Interpolation) loads <pack>/<ckpts_path>/rife/<ckpt_name> (ckpts_path
# from the pack's config.yaml, "./ckpts") with torch.load + a strict IFNet.load_state_dict, and downloads the
# file when it is missing. A random-weight checkpoint with the real IFNet layout stands in for it.

RIFE_PACK_DIR = "custom_nodes/ComfyUI-Frame-Interpolation"  # the pack under a ComfyUI base directory
RIFE_ARCH: dict[str, str] = {"rife47.pth": "4.7", "rife49.pth": "4.7"}  # ckpt_name -> IFNet arch_ver
DEFAULT_RIFE_CKPT = "rife47.pth"
RIFE_MARKER = "vfi_models/rife/__init__.py"  # a file only this pack has


def _rife_arch(ckpt: str) -> str:
    try:
        return RIFE_ARCH[ckpt]
    except KeyError:
        raise ValueError(f"unknown RIFE checkpoint {ckpt!r}; choose one of {', '.join(RIFE_ARCH)}") from None


def rife_shapes(arch: str = "4.7") -> dict[str, Shape]:
    """Tensor names/shapes of the pack's IFNet(arch_ver=arch) state dict, in its order."""
    if arch != "4.7":
        raise ValueError(f"no RIFE layout for arch {arch!r}; only 4.7 (rife47.pth, rife49.pth) is known")
    s: dict[str, Shape] = {}
    for i, (cin, c) in enumerate(((7 + 8, 192), (8 + 4 + 8, 128), (8 + 4 + 8, 96), (8 + 4 + 8, 64))):
        b = f"block{i}."
        s.update({b + "conv0.0.0.weight": (c // 2, cin, 3, 3), b + "conv0.0.0.bias": (c // 2,),
                  b + "conv0.1.0.weight": (c, c // 2, 3, 3), b + "conv0.1.0.bias": (c,)})
        for j in range(8):  # ResConv: beta, then its conv
            s.update({f"{b}convblock.{j}.beta": (1, c, 1, 1), f"{b}convblock.{j}.conv.weight": (c, c, 3, 3),
                      f"{b}convblock.{j}.conv.bias": (c,)})
        # ConvTranspose2d(c, 4 * 6, 4, 2, 1) + PixelShuffle(2): 4 flow + 1 mask channels (+1 unused)
        s.update({b + "lastconv.0.weight": (c, 24, 4, 4), b + "lastconv.0.bias": (24,)})
    s.update({"encode.0.weight": (16, 3, 3, 3), "encode.0.bias": (16,),
              "encode.1.weight": (16, 4, 4, 4), "encode.1.bias": (4,)})
    return s


def rife_specs(ckpt: str = DEFAULT_RIFE_CKPT) -> list[TensorSpec]:
    """float32 IFNet tensors: biases 0, ResConv betas 1, conv weights N(0, 0.5^2/fan_in); the flow heads
    (lastconv) 10x smaller so flows stay within a few pixels and the blended frames stay finite."""
    specs: list[TensorSpec] = []
    for name, shape in rife_shapes(_rife_arch(ckpt)).items():
        if name.endswith(".bias"):
            specs.append(TensorSpec(name, shape, "F32", "zeros"))
        elif name.endswith(".beta"):
            specs.append(TensorSpec(name, shape, "F32", "ones"))
        else:
            transposed = ".lastconv." in name or name.startswith("encode.1.")
            # ConvTranspose2d weights are (in, out, k, k); with stride 2 each output sees in * k * k / 4
            fan_in = shape[0] * shape[2] * shape[3] // 4 if transposed else math.prod(shape[1:])
            gain = 0.05 if ".lastconv." in name else 0.5
            specs.append(TensorSpec(name, shape, "F32", "normal", gain / math.sqrt(fan_in)))
    return specs


def rife_payload_bytes(ckpt: str = DEFAULT_RIFE_CKPT) -> int:
    """Bytes of tensor data in the checkpoint (the file adds torch.save's zip and pickle records)."""
    return sum(t.nbytes for t in rife_specs(ckpt))


def rife_ckpt_dir(pack_dir: Path | str) -> Path:
    """Where the pack looks for RIFE checkpoints: <pack>/<config.yaml ckpts_path, default ./ckpts>/rife."""
    pack = Path(pack_dir)
    ckpts = "./ckpts"
    with contextlib.suppress(OSError):
        for line in (pack / "config.yaml").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "ckpts_path":
                value = value.split("#", 1)[0].strip().strip("\"'")
                ckpts = value or ckpts
    return pack / ckpts / "rife"


def rife_path(pack_dir: Path | str, ckpt: str = DEFAULT_RIFE_CKPT) -> Path:
    """The checkpoint file RIFE VFI opens for ckpt_name=ckpt."""
    _rife_arch(ckpt)
    return rife_ckpt_dir(pack_dir) / ckpt


def rife_stamp_path(pack_dir: Path | str, ckpt: str = DEFAULT_RIFE_CKPT) -> Path:
    return rife_ckpt_dir(pack_dir) / f".wan22-synth-{Path(ckpt).stem}.json"


def write_rife_stamp(pack_dir: Path | str, ckpt: str, seed: int) -> Path:
    """Record version, checkpoint, arch, seed and the file's size, so a later session can reuse it."""
    body = {"version": SYNTH_VERSION, "ckpt": ckpt, "arch": _rife_arch(ckpt), "seed": seed,
            "bytes": rife_path(pack_dir, ckpt).stat().st_size}
    path = rife_stamp_path(pack_dir, ckpt)
    with _atomic(path) as f:
        f.write(json.dumps(body, indent=1, sort_keys=True).encode())
    return path


def rife_stamp_matches(pack_dir: Path | str, ckpt: str = DEFAULT_RIFE_CKPT, seed: int = Options.seed) -> bool:
    """True when the stamp's version, checkpoint, arch and seed match and the file still has its size."""
    try:
        st = json.loads(rife_stamp_path(pack_dir, ckpt).read_text())
        size = rife_path(pack_dir, ckpt).stat().st_size
    except (OSError, ValueError):
        return False
    want = {"version": SYNTH_VERSION, "ckpt": ckpt, "arch": _rife_arch(ckpt), "seed": seed, "bytes": size}
    return isinstance(st, dict) and all(st.get(k) == v for k, v in want.items())


def rife_command(python: str, pack_dir: Path | str, *, ckpt: str = DEFAULT_RIFE_CKPT, seed: int = Options.seed,
                 device: str = "cpu") -> list[str]:
    """The argv that writes <pack_dir>/ckpts/rife/<ckpt> in the interpreter `python` (ComfyUI's)."""
    _rife_arch(ckpt)
    return [str(python), str(script_path()), "--rife-dir", str(pack_dir), "--rife-ckpt", ckpt,
            "--seed", str(seed), "--device", device]


def _rife_error(path: Path, cause: str, command: Sequence[str] = (), output_tail: str = "") -> Exception:
    from pytest_wan22.errors import SynthError

    return SynthError(
        f"could not write the synthetic RIFE checkpoint {path}: {cause}; point --wan22-python "
        "(ini wan22_python) at ComfyUI's interpreter (it needs torch), or run the command below by hand "
        "to see the whole output", command=command, output_tail=output_tail)


def ensure_rife(python: str, pack_dir: Path | str, *, ckpt: str = DEFAULT_RIFE_CKPT, seed: int = Options.seed,
                device: str = "cpu", timeout: float = 300, log_path: Path | None = None) -> Path:
    """Write the RIFE checkpoint into the pack with `python` unless a matching stamp shows it is there."""
    from pytest_wan22.errors import SynthError

    pack = Path(pack_dir)
    path = rife_path(pack, ckpt)
    if not (pack / RIFE_MARKER).is_file():
        raise SynthError(
            f"{pack} is not a ComfyUI-Frame-Interpolation folder (no {RIFE_MARKER}); put "
            f"Fannovel16/ComfyUI-Frame-Interpolation under ComfyUI's custom_nodes/ ({RIFE_PACK_DIR}) "
            "or drop interpolate() variants")
    with _lock(path.parent / f".wan22-synth-{path.stem}.lock"):
        if rife_stamp_matches(pack, ckpt, seed):
            return path
        cmd = rife_command(python, pack, ckpt=ckpt, seed=seed, device=device)
        tail = _run_writer(cmd, python, timeout, log_path, lambda cause, c, out="": _rife_error(path, cause, c, out),
                           "the writer")
        if not path.is_file():
            raise _rife_error(path, "the writer ended but the file is not there", cmd, tail)
        write_rife_stamp(pack, ckpt, seed)
    return path


def rife_state_dict(ckpt: str = DEFAULT_RIFE_CKPT, seed: int = Options.seed, device: str = "cpu") -> dict[str, Any]:
    """The random-weight IFNet state dict as CPU float32 tensors (needs torch)."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    sd: dict[str, Any] = {}
    for t in rife_specs(ckpt):
        if t.init == "normal":
            x = torch.randn(t.shape, generator=gen, device=dev).mul_(t.value)
        else:
            x = torch.full(t.shape, 1.0 if t.init == "ones" else 0.0, device=dev)
        sd[t.name] = x.to(torch.float32).cpu().contiguous()
    return sd


def write_rife(pack_dir: Path | str, ckpt: str = DEFAULT_RIFE_CKPT, *, seed: int = Options.seed,
               device: str = "cpu") -> Path:
    """torch.save the state dict to <pack>/ckpts/rife/<ckpt> atomically and stamp it (needs torch)."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    t0 = time.perf_counter()
    path = rife_path(pack_dir, ckpt)
    with _atomic(path) as f:
        torch.save(rife_state_dict(ckpt, seed, device), f)
    write_rife_stamp(pack_dir, ckpt, seed)
    size = path.stat().st_size
    print(f"{size:>16,d} B {time.perf_counter() - t0:7.2f} s  {path}", flush=True)
    return path


def _print_rife_sizes(pack_dir: Path, ckpt: str) -> None:
    """Exact file size when torch is importable here (a zero-filled save in memory), else the payload."""
    path = rife_path(pack_dir, ckpt)
    if importlib.util.find_spec("torch") is None:
        size = rife_payload_bytes(ckpt)
        print(f"{size:>16,d} B {size / 2**20:8.2f} MiB  {path} (tensor data; torch.save adds a few KiB)")
        return
    import io

    import torch  # type: ignore[import-not-found, unused-ignore]

    buf = io.BytesIO()
    torch.save({t.name: torch.zeros(t.shape) for t in rife_specs(ckpt)}, buf)
    print(f"{buf.tell():>16,d} B {buf.tell() / 2**20:8.2f} MiB  {path}")


# ----------------------------------------------------------------------------- command line


HELP = """\
Write Wan 2.2 model files filled with random weights, with the real file names, tensor names and shapes, so
ComfyUI loads and runs the real image-to-video graph without downloading any weights. Use them to test a
ComfyUI install, a workflow or pytest-wan22 itself: the videos are noise, the memory use and the work per step
are those of the real models (a14b, ti2v5b) or of small stand-ins that run on a CPU in seconds (tiny,
ti2v5b_tiny).

OUT becomes a ComfyUI base directory (models/, input/, output/): start ComfyUI with --base-directory OUT, or
let pytest-wan22 generate and use a set by itself (--wan22-synthetic, and the cpu tier always): it writes every
model file a workflow names, under that name and with the layout the name and the graph imply, before the
workflow's first run (through --jobs). Generating needs torch: run it with ComfyUI's interpreter (--python).

presets:
  tiny         CPU stand-ins, about 6 MB: two small DiTs (high and low noise), a small Wan 2.1 VAE, a start
               image and a precomputed text conditioning (no text encoder needed)
  a14b         full Wan 2.2 I2V A14B in the fp8_scaled layout under the official names, the whole UMT5-XXL
               text encoder and the Wan 2.1 VAE: about 38 GB (add --lora-rank 64 for LightX2V-shaped LoRAs)
  ti2v5b_tiny  TI2V 5B stand-in with the full-size Wan 2.2 VAE: about 1.4 GB
  ti2v5b       full TI2V 5B (fp16), the Wan 2.2 VAE and the whole UMT5-XXL encoder: about 18 GB
"""

EPILOG = """\
examples:
  wan22-synth ~/wan22-models/tiny --python ~/ComfyUI/venv/bin/python
  wan22-synth /dev/shm/wan22-models/a14b --preset a14b --device cuda --lora-rank 64 --python ~/ComfyUI/venv/bin/python
  wan22-synth --dry-run --preset a14b          (the size of each file, nothing written)
  wan22-synth --rife-dir ~/ComfyUI/custom_nodes/ComfyUI-Frame-Interpolation --python ~/ComfyUI/venv/bin/python
"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wan22-synth", description=HELP, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", metavar="OUT",
                    help="the folder to write the set into (it gets models/, input/, output/); may be left out "
                         "with --rife-dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                    help="which model set to write (see presets above; default: %(default)s)")
    ap.add_argument("--python", metavar="EXE",
                    help="ComfyUI's interpreter, which has torch, to generate with (e.g. ~/ComfyUI/venv/bin/python); "
                         "default: the one running this command")
    ap.add_argument("--device", default="cpu",
                    help="where the random numbers are drawn: cpu, cuda or cuda:N (cuda is much faster for a14b; "
                         "default: %(default)s)")
    ap.add_argument("--lora-rank", type=int, default=0, metavar="RANK",
                    help="also write two LightX2V-shaped LoRAs of this rank (a14b only; default: none)")
    ap.add_argument("--text-encoder", choices=TEXT_ENCODERS,
                    help="UMT5-XXL text encoder: none, stub (the tokenizer and the few tensors ComfyUI "
                         "recognises it by) or full (every weight); default: the preset's (tiny: none, a14b: full)")
    ap.add_argument("--seed", type=int, default=Options.seed,
                    help="seed of the random weights: the same seed writes the same files (default: %(default)s)")
    ap.add_argument("--fp8-matmul", choices=("fast", "full"), default=Options.fp8_matmul,
                    help="how ComfyUI runs the fp8 weights: fast (fp8 matrix multiplies where the GPU has them) "
                         "or full (upcast to full precision); default: %(default)s")
    ap.add_argument("--dry-run", "--print-sizes", dest="dry_run", action="store_true",
                    help="print each file's exact size and write nothing")
    ap.add_argument("--timing-json", type=Path, metavar="PATH",
                    help="also save each file's size and write time to PATH (JSON)")
    ap.add_argument("--rife-dir", type=Path, metavar="PACK_DIR",
                    help="also write a random-weight RIFE frame-interpolation checkpoint into PACK_DIR/ckpts/rife/, "
                         "PACK_DIR being a ComfyUI-Frame-Interpolation node pack, which would otherwise download one")
    ap.add_argument("--jobs", type=Path, metavar="JOBS_JSON",
                    help="write the model files (by layout) and input media a jobs file lists, as the plugin asks "
                         "before a run: {\"files\": [{\"path\", \"layout\", \"seed\"}], \"media\": [...]}")
    ap.add_argument("--rife-ckpt", choices=sorted(RIFE_ARCH), default=DEFAULT_RIFE_CKPT,
                    help="the RIFE checkpoint name to write (default: %(default)s)")
    return ap


def _print_sizes(preset: str, opts: Options) -> None:
    blob = 0
    if opts.text_encoder != "none":
        if importlib.util.find_spec("sentencepiece") is not None:
            blob = len(tokenizer_blob())
        else:
            print("(sentencepiece missing: text encoder size excludes its tokenizer blob)")
    ms = model_set(preset, text_encoder=opts.text_encoder, lora_rank=opts.lora_rank)
    sizes = planned_sizes(preset, opts, blob)
    for rel in ms.files.values():
        size = sizes.get(rel)
        if size is None:
            print(f"{'-':>16}   {'(pickle)':>12}  {rel}")
        else:
            print(f"{size:>16,d} B {size / 2**30:8.2f} GiB  {rel}")
    print(f"{sum(sizes.values()):>16,d} B {sum(sizes.values()) / 2**30:8.2f} GiB  total")


def _run_jobs(jobs: Path, python: str | None, device: str) -> int:
    """--jobs: write the model files and media a jobs file lists (what the plugin asks for)."""
    if python and os.path.abspath(shutil.which(python) or python) != os.path.abspath(sys.executable):
        return subprocess.call(jobs_command(python, jobs, device=device))
    write_jobs(json.loads(jobs.read_text(encoding="utf-8")), device=device)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """wan22-synth: write a synthetic Wan 2.2 i2v set (or print its sizes with --dry-run)."""
    ap = _parser()
    a = ap.parse_args(argv)
    if a.lora_rank < 0:
        ap.error("--lora-rank must be >= 0")
    if a.jobs is not None:
        return _run_jobs(a.jobs, a.python, a.device)
    if a.out is None and a.rife_dir is None:
        ap.error("give the base directory OUT, --rife-dir PACK_DIR, or both")
    opts = _options(a.preset, a.text_encoder, a.lora_rank, seed=a.seed, fp8_matmul=a.fp8_matmul)
    if a.dry_run:
        if a.out is not None:
            _print_sizes(a.preset, opts)
        if a.rife_dir is not None:
            _print_rife_sizes(a.rife_dir, a.rife_ckpt)
        return 0
    python = a.python
    # compare unresolved paths: a venv's python is a symlink to the base interpreter, yet differs from it
    if python and os.path.abspath(shutil.which(python) or python) != os.path.abspath(sys.executable):
        if a.out is None:
            return subprocess.call(rife_command(python, a.rife_dir, ckpt=a.rife_ckpt, seed=a.seed,
                                                device=a.device))
        extra = _option_args(opts) + (["--timing-json", str(a.timing_json)] if a.timing_json else [])
        if a.rife_dir is not None:
            extra += ["--rife-dir", str(a.rife_dir), "--rife-ckpt", a.rife_ckpt]
        return subprocess.call(generate_command(python, a.out, a.preset, device=a.device, extra=extra))
    if importlib.util.find_spec("torch") is None:
        print(f"wan22-synth: torch is not importable in {sys.executable}; pass --python with ComfyUI's "
              "interpreter (e.g. --python /path/to/ComfyUI/venv/bin/python)", file=sys.stderr)
        return 2
    if a.out is not None:
        generate(a.out.resolve(), a.preset, opts, device=a.device, timing_json=a.timing_json)
    if a.rife_dir is not None:
        write_rife(a.rife_dir.resolve(), a.rife_ckpt, seed=a.seed, device=a.device)
    return 0


if __name__ == "__main__":
    # Run by path, this file's folder is sys.path[0]; drop it so package modules never shadow others.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    sys.exit(main())

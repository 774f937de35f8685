"""Entry point of the fake ComfyUI: ``python tests/fake_comfyui/main.py --listen H --port P [flags]``.

It accepts ComfyUI's command line (unknown flags are ignored), honours --listen, --port,
--output-directory, --input-directory, --temp-directory, --base-directory, --cpu and
--preview-method, and takes its behaviour from FAKE_COMFYUI_* variables (see scenarios.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import app as fake_app  # noqa: E402
import scenarios  # noqa: E402
from aiohttp import web  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The ComfyUI flags the fake uses; the rest are accepted and ignored."""
    parser = argparse.ArgumentParser(prog="main.py", add_help=True)
    parser.add_argument("--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0,::")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--base-directory", type=str, default=None)
    parser.add_argument("--output-directory", type=str, default=None)
    parser.add_argument("--input-directory", type=str, default=None)
    parser.add_argument("--temp-directory", type=str, default=None)
    parser.add_argument("--preview-method", type=str, default="none")
    parser.add_argument("--extra-model-paths-config", type=str, default=None, nargs="+", action="append")
    attention = parser.add_mutually_exclusive_group()  # ComfyUI refuses two of these, as it refuses two VRAM modes
    for flag in ("--use-split-cross-attention", "--use-quad-cross-attention", "--use-pytorch-cross-attention",
                 "--use-sage-attention", "--use-flash-attention"):
        attention.add_argument(flag, action="store_true")
    vram = parser.add_mutually_exclusive_group()
    for flag in ("--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"):
        vram.add_argument(flag, action="store_true")
    args, _unknown = parser.parse_known_args(argv)
    return args


def resolve_dirs(args: argparse.Namespace) -> fake_app.Dirs:
    """ComfyUI's directory rules; with neither --base-directory nor --output-directory, a temp dir."""
    if args.base_directory:
        base = Path(args.base_directory).resolve()
    else:
        base = Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
    return fake_app.Dirs(
        base=base,
        output=Path(args.output_directory).resolve() if args.output_directory else base / "output",
        input=Path(args.input_directory).resolve() if args.input_directory else base / "input",
        temp=Path(args.temp_directory).resolve() if args.temp_directory else base / "temp",
    )


def _scalar(text: str) -> str:
    """A YAML scalar as the launcher writes one: plain, or double-quoted the JSON way."""
    return str(json.loads(text)) if text.startswith('"') else text


def probe_installed(args: argparse.Namespace, dirs: fake_app.Dirs) -> Path | None:
    """The wan22 probe node, if the launcher installed it (base/custom_nodes or an extra paths config)."""
    roots = [dirs.base / "custom_nodes"]
    for group in args.extra_model_paths_config or ():
        for config in group:
            try:
                text = Path(config).read_text(encoding="utf-8")
            except OSError:
                continue
            base = re.search(r"^\s*base_path:\s*(.+?)\s*$", text, re.MULTILINE)
            nodes = re.search(r"^\s*custom_nodes:\s*(.+?)\s*$", text, re.MULTILINE)
            if nodes:
                folder = Path(_scalar(nodes.group(1)))
                roots.append(folder if folder.is_absolute() or not base else Path(_scalar(base.group(1))) / folder)
    for root in roots:
        if (root / "wan22_probe" / "__init__.py").is_file():
            return root / "wan22_probe"
    return None


def vram_state(args: argparse.Namespace) -> str:
    """The state ComfyUI logs as 'Set vram state to: ...'."""
    if args.cpu:
        return "DISABLED"
    if args.lowvram:
        return "LOW_VRAM"
    if args.novram:
        return "NO_VRAM"
    if args.highvram or args.gpu_only:
        return "HIGH_VRAM"
    return "NORMAL_VRAM"


# Attention flags whose package ComfyUI imports at start-up (FAKE_COMFYUI_PACKAGES lists the installed ones).
ATTENTION_PACKAGES = {"--use-sage-attention": "sageattention", "--use-flash-attention": "flash-attn"}


def crash(code: int) -> None:
    """FAKE_COMFYUI_CRASH_ON_START: a start-up traceback, then exit with the code."""
    fake_app.log(
        "Traceback (most recent call last):",
        '  File "<comfyui>/main.py", line 182, in <module>',
        "    import execution",
        '  File "<comfyui>/comfy/model_management.py", line 232, in <module>',
        "    total_vram = get_total_memory(get_torch_device()) / (1024 * 1024)",
        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
        "installed a driver from http://www.nvidia.com/Download/index.aspx",
        f"(fake ComfyUI: FAKE_COMFYUI_CRASH_ON_START={code})",
    )
    sys.exit(code)


async def hang(hosts: list[str], port: int) -> None:
    """FAKE_COMFYUI_HANG: accept connections and never answer."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    servers = [await asyncio.start_server(swallow, host, port) for host in hosts]
    fake_app.log(
        "Starting server",
        "",
        f"To see the GUI go to: http://{hosts[0]}:{port}",
        "(fake ComfyUI: FAKE_COMFYUI_HANG is set; connections are accepted and never answered)",
    )
    await asyncio.gather(*(s.serve_forever() for s in servers))


async def serve(args: argparse.Namespace, knobs: scenarios.Knobs, argv: list[str]) -> None:
    """Start listening and run until killed."""
    hosts = [h.strip() for h in args.listen.split(",") if h.strip()] or ["127.0.0.1"]
    if knobs.start_delay:
        await asyncio.sleep(knobs.start_delay)
    if knobs.hang:
        await hang(hosts, args.port)
        return
    dirs = resolve_dirs(args)
    for path in (dirs.output, dirs.input, dirs.temp):
        path.mkdir(parents=True, exist_ok=True)
    fake_app.ensure_inputs(dirs, knobs.input_images)
    probe = probe_installed(args, dirs)
    if probe is not None:
        fake_app.log("", "Import times for custom nodes:", f"   0.0 seconds: {probe}", "")
    preview = args.preview_method not in ("none", "", None)
    server = fake_app.FakeComfy(knobs, dirs, argv, cpu=args.cpu, preview=preview, probe=probe is not None)
    runner = web.AppRunner(server.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    port = args.port
    for host in hosts:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if port == 0:
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                port = sockets[0].getsockname()[1]
    fake_app.log("Starting server", "", f"To see the GUI go to: http://{hosts[0]}:{port}")
    await asyncio.Event().wait()


def local_knobs() -> dict[str, str]:
    """FAKE_COMFYUI_* values from fake_knobs.json beside this file: a copy of the fake is then another install
    (say a slower one for an A/B session) while both share one environment."""
    path = _HERE / "fake_knobs.json"
    if not path.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def main(argv: list[str] | None = None) -> int:
    """Run the fake; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        env = {**os.environ, **local_knobs()}
        knobs = scenarios.Knobs.from_env({**env, **scenarios.when_flags(env, argv)})
    except scenarios.KnobError as exc:
        fake_app.log(f"fake ComfyUI: {exc}")
        return 2
    if knobs.crash_on_start is not None:
        crash(knobs.crash_on_start)
    installed = {p.strip() for p in os.environ.get("FAKE_COMFYUI_PACKAGES", "").split(",") if p.strip()}
    for flag, package in ATTENTION_PACKAGES.items():
        if flag in argv and package not in installed:  # as comfy/ldm/modules/attention.py does
            fake_app.log("", "", f"To use the `{flag}` feature, the `{package}` package must be installed first.",
                         f"command:\n\t{sys.executable} -m pip install {package}")
            return 255
    vram_mib = knobs.vram_mib if knobs.vram_mib is not None else 32607.0
    device = "cpu" if args.cpu else f"cuda:0 {knobs.gpu_name} : cudaMallocAsync"
    fake_app.log(
        f"Total VRAM {vram_mib:.0f} MB, total RAM 131072 MB",
        "pytorch version: 2.9.1+cu128",
        f"Set vram state to: {vram_state(args)}",
        f"Device: {device}",
        f"Python version: {sys.version}",
        f"ComfyUI version: {fake_app.VERSION}",
        f"(fake ComfyUI, pid {os.getpid()}, scenario {knobs.scenario})",
    )
    try:
        asyncio.run(serve(args, knobs, ["main.py", *argv]))
    except KeyboardInterrupt:
        fake_app.log("", "Stopped server")
    except OSError as exc:
        fake_app.log(f"fake ComfyUI could not listen on {args.listen}:{args.port}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

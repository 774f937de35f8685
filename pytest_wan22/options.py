"""The one table of options: each becomes a --wan22-* flag, a wan22_* ini key and a WAN22_* variable."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .compare import parse_tolerance


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive number")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a port (0 picks a free one)")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def _rounds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r}: at least one round is needed")
    return value


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """Seconds from '90' or '90s', '45m', '2h', '1h30m'."""
    import re

    raw = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        value = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", raw)
        if not parts or re.sub(r"\s+", "", "".join(n + u for n, u in parts)) != re.sub(r"\s+", "", raw):
            raise ValueError(f"{text!r} is not a duration (e.g. 3600, 90m, 2h, 1h30m)")
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


@dataclass(frozen=True)
class Option:
    """One setting, written once: flag, ini key, environment variable, parser and help."""

    name: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    flag: bool = False  # a store_true switch on the command line
    multiple: bool = False  # may be given several times; ini takes one per line
    metavar: str | None = None

    @property
    def cli(self) -> str:
        """The command-line flag."""
        return "--wan22-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination and the ini key."""
        return "wan22_" + self.name

    @property
    def env(self) -> str:
        """The environment variable."""
        return "WAN22_" + self.name.upper()

    def where(self) -> str:
        """How a user sets it, for error messages."""
        return f"{self.cli} (ini {self.dest}, env {self.env})"

    def argparse_type(self) -> Callable[[str], Any]:
        """An argparse type= callable whose errors name the flag."""

        def convert(text: str) -> Any:
            try:
                return self.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{exc}") from None

        convert.__name__ = self.name
        return convert


OPTIONS: tuple[Option, ...] = (
    Option("comfyui_dir", "ComfyUI checkout to launch (the folder that holds main.py).", metavar="DIR"),
    Option("python", "Python interpreter that runs ComfyUI (default: venv/ or .venv/ inside the ComfyUI folder, "
           "the portable build's python_embeded beside it, else the one running pytest).", metavar="EXE"),
    Option("url", "Attach to a running ComfyUI at this URL instead of launching one.", metavar="URL"),
    Option("host", "Address the launched ComfyUI listens on.", default="127.0.0.1", metavar="HOST"),
    Option("port", "Port for the launched ComfyUI; 0 picks a free one.", parse=_port, default=0, metavar="PORT"),
    Option("tier", "Run as this tier instead of the one detected through NVML.", metavar="TIER"),
    Option("tiers_file", "TOML tier table whose rows replace or extend the shipped one.", metavar="FILE"),
    Option("server_args", "Extra ComfyUI launch arguments, appended to the tier's (quote them as one string).",
           metavar="ARGS", default=""),
    Option("startup_timeout", "Seconds ComfyUI may take to answer /system_stats after launch.",
           parse=_positive_float, default=180.0, metavar="SECONDS"),
    Option("run_timeout", "Seconds one workflow run may take (default: the tier's run_timeout_s).",
           parse=_positive_float, metavar="SECONDS"),
    Option("workflows_dir", "Folder of API-format workflow JSON files.", metavar="DIR", default="workflows"),
    Option("workflows", "Workflow files to gate as they are, one test each (API or UI format): a file, a folder "
           "of *.json, or template:GLOB for the templates ComfyUI ships (e.g. template:video_wan2_2_*); "
           "may be repeated.", multiple=True, metavar="PATH|template:GLOB"),
    Option("baselines_dir", "Folder of stored baselines (one sub-folder per tier).", metavar="DIR",
           default="baselines"),
    Option("update_baselines", "Record this session's results as the new baselines (nothing else writes them).",
           parse=_bool, default=False, flag=True),
    Option("allow_neighbours", "Record baselines even while other compute processes use the GPU (they are named "
           "in the records); without it recording beside one fails that test before anything is written.",
           parse=_bool, default=False, flag=True),
    Option("tolerance", "Allowed change before a test fails, as METRIC:LIMIT (METRIC: step, sampling, wall, a "
           "phase such as decode or save, vram), e.g. step:2%, wall:10%+0.5s or vram:512MiB; may be repeated.",
           parse=parse_tolerance, multiple=True, metavar="METRIC:LIMIT"),
    Option("rounds", "Most timed rounds per variant: rounds stop earlier once the verdict is decided.",
           parse=_rounds, default=10, metavar="N"),
    Option("min_rounds", "Fewest timed rounds per variant before a verdict may stop them (all of --wan22-rounds "
           "when recording baselines).", parse=_rounds, default=3, metavar="N"),
    Option("warmup_rounds", "Untimed rounds before the timed ones (model loads, compilation).",
           parse=_non_negative_int, default=1, metavar="N"),
    Option("log_dir", "Where server logs and run records go (default: .wan22/runs/<UTC time>-<pid>/ under the "
           "rootdir, the last 20 sessions kept).", metavar="DIR"),
    Option("synthetic", "Run on synthetic random-weight models of this preset (tiny, a14b; ti2v5b_tiny, ti2v5b "
           "for TI2V 5B graphs only) instead of the user's; the cpu tier always uses tiny. Single-expert "
           "(TI2V 5B) workflows run on the matching 5B set.",
           parse=_choice("tiny", "a14b", "ti2v5b_tiny", "ti2v5b"), metavar="PRESET"),
    Option("models_dir", "Where synthetic models are generated and kept between sessions.", metavar="DIR"),
    Option("missing", "What to do when a variant needs a node or model file the server lacks.",
           parse=_choice("fail", "skip"), default="fail", metavar="fail|skip"),
    Option("vram_interval", "Seconds between VRAM samples during a run.", parse=_positive_float, default=0.02,
           metavar="SECONDS"),
    Option("emulate_tier", "Cap the ComfyUI process to this tier's card memory on a bigger GPU.",
           metavar="TIER"),
    Option("gpu_index", "NVML index of the GPU to run on (xdist workers get one each).",
           parse=_non_negative_int, metavar="N"),
    Option("ab_python", "A/B mode: the current environment's interpreter (A; default: found in "
           "--wan22-ab-comfyui-dir as --wan22-python is, else side B's); the candidate (B) is --wan22-python. "
           "Each variant runs on both, rounds interleaved, and B is judged against A.",
           metavar="EXE"),
    Option("ab_comfyui_dir", "A/B mode: the current environment's ComfyUI folder (A); the candidate (B) is "
           "--wan22-comfyui-dir.", metavar="DIR"),
    Option("ab_args", "A/B mode: launch arguments of side A instead of --wan22-server-args (quote them as one "
           "string), e.g. to weigh one attention backend against another.", metavar="ARGS"),
    Option("nvml_accounting", "Switch on NVML accounting mode for exact per-process peaks; changes device "
           "settings and needs root: only on a GPU you own.", parse=_bool, default=False, flag=True),
    # -- tuning: the fastest profile that fits and keeps the output --
    Option("tune", "Tune the tier's launch profile instead of gating it: each option of the tier's search space "
           "(its [tiers.<name>.tune] table) runs as an A/B against the profile on one variant per class of work; "
           "what does not fit or changes the output is rejected, the faster options are combined, and the winner is "
           "written as a tier row (--wan22-tune-out).", parse=_bool, default=False, flag=True),
    Option("tune_budget", "Time the tuning may spend (e.g. 3600, 90m, 2h): a candidate whose A/B would not fit in "
           "what is left is not started, and the report lists it (default: no limit).", parse=_duration,
           metavar="DURATION"),
    Option("tune_out", "The tier file the tuning writes its winner to (default: tuned-<tier>.toml in the session's "
           "run folder); never the plugin's own tier table.", metavar="FILE"),
    Option("tune_space", "Tune only these option classes (attention, fast, vram, reserve_vram, alloc, env, compile, "
           "vae, unet, cache, preview, args) or CLASS=VALUE options, comma separated, e.g. cache=lru:16,preview=none; "
           "may be repeated.", multiple=True, metavar="CLASS[=VALUE],..."),
    # -- what a person looks at: live progress and the report --
    Option("progress", "Live progress: auto (a status line on a terminal, a plain line every few seconds "
           "without one, a line per round with -q), live, lines, rounds or off.",
           parse=_choice("auto", "live", "lines", "rounds", "off"), default="auto",
           metavar="auto|live|lines|rounds|off"),
    Option("progress_interval", "Seconds between plain progress lines when there is no terminal.",
           parse=_positive_float, default=5.0, metavar="SECONDS"),
    Option("report", "Write a report folder: index.html (plots, opens from disk), summary.md (also appended to "
           "$GITHUB_STEP_SUMMARY) and results.json.", metavar="DIR"),
)

BY_NAME = {o.name: o for o in OPTIONS}

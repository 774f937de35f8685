"""Domain errors: each one names its cause and the fix (flag, ini key, file)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Wan22Error(Exception):
    """Base of every error pytest-wan22 raises on purpose."""


class ConfigError(Wan22Error):
    """A setting is wrong: a bad path, an unknown tier, a bad tolerance."""


class ServerStartError(Wan22Error):
    """ComfyUI did not come up."""

    def __init__(self, message: str, *, exit_code: int | None = None, command: Sequence[str] = (),
                 log_tail: str = "") -> None:
        self.exit_code = exit_code
        self.command = tuple(command)
        self.log_tail = log_tail
        parts = [message]
        if command:
            parts.append("command: " + " ".join(command))
        if log_tail:
            parts.append("last log lines:\n" + log_tail)
        super().__init__("\n".join(parts))

    @classmethod
    def exited(cls, exit_code: int, command: Sequence[str], log_tail: str) -> ServerStartError:
        """The process died before it answered."""
        return cls(f"ComfyUI exited with code {exit_code} during start", exit_code=exit_code,
                   command=command, log_tail=log_tail)


class ServerTimeout(ServerStartError):
    """ComfyUI did not answer within the start timeout."""

    @classmethod
    def after(cls, seconds: float, url: str, command: Sequence[str], log_tail: str) -> ServerTimeout:
        """The readiness deadline passed."""
        return cls(
            f"ComfyUI did not answer {url}/system_stats within {seconds:g} s; raise "
            "--wan22-startup-timeout (ini wan22_startup_timeout) if it is only slow",
            command=command, log_tail=log_tail)


class PortInUse(ServerStartError):
    """Something already listens where the server should start."""

    @classmethod
    def at(cls, host: str, port: int) -> PortInUse:
        """The chosen port is taken."""
        return cls(
            f"port {port} on {host} is already in use; pass --wan22-port 0 (ini wan22_port) to pick a free "
            "port, stop what listens there, or use it on purpose with --wan22-url http://"
            f"{host}:{port}")


class ComfyAPIError(Wan22Error):
    """ComfyUI answered an HTTP request with an error."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class PromptRejected(ComfyAPIError):
    """POST /prompt answered 400: the workflow failed validation."""

    def __init__(self, message: str, *, status: int | None, body: Any,
                 node_errors: Mapping[str, Any] | None = None) -> None:
        self.node_errors: Mapping[str, Any] = node_errors or {}
        super().__init__(message, status=status, body=body)


class WorkflowError(Wan22Error):
    """A workflow file is unreadable, malformed, or not in API format."""


class SelectorError(WorkflowError):
    """A selector matched no node, or more than one."""


class PreflightError(Wan22Error):
    """The server lacks a node class, model file or enum value the workflow needs."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message)


class NvmlUnavailable(Wan22Error):
    """NVML (nvidia-ml-py and the driver library) cannot be used on this machine."""


class BaselineError(Wan22Error):
    """A baseline file is unreadable, or was made on another tier or GPU."""


class SynthError(Wan22Error):
    """The synthetic model generator (pytest_wan22/synth.py) failed."""

    def __init__(self, message: str, *, command: Sequence[str] = (), output_tail: str = "") -> None:
        self.command = tuple(command)
        self.output_tail = output_tail
        parts = [message]
        if command:
            parts.append("command: " + " ".join(command))
        if output_tail:
            parts.append("last output lines:\n" + output_tail)
        super().__init__("\n".join(parts))

    @classmethod
    def failed(cls, cause: str, command: Sequence[str], output_tail: str = "") -> SynthError:
        """Generating the model set did not succeed."""
        return cls(
            f"could not generate the synthetic Wan 2.2 models: {cause}; point --wan22-python "
            "(ini wan22_python) at ComfyUI's interpreter (it needs torch), or run the command "
            "below by hand to see the whole output",
            command=command, output_tail=output_tail)


class Fail(Wan22Error):
    """Fail the running test with this message: the pytest layer turns it into a failure without a traceback."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class Skip(Wan22Error):
    """Skip the running test for this reason: the pytest layer turns it into a skip."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class LayoutError(SynthError):
    """A model file a workflow names has a layout the synthetic set cannot infer (pytest_wan22/synth_plan.py)."""

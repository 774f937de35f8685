"""pytest-wan22: a pytest gate for Wan 2.2 image-to-video workflows in ComfyUI."""

from __future__ import annotations

from .client import ComfyClient, Execution
from .compare import Summary, Tolerance, Verdict
from .errors import Wan22Error
from .launcher import ComfyServer, ServerHandle, ServerSpec
from .records import RunRecord
from .tiers import Tier, load_tiers
from .workflows import Variant, Workflow, load_workflow

__version__ = "0.1.0"

__all__ = [
    "ComfyClient",
    "ComfyServer",
    "Execution",
    "RunRecord",
    "ServerHandle",
    "ServerSpec",
    "Summary",
    "Tier",
    "Tolerance",
    "Variant",
    "Verdict",
    "Wan22Error",
    "Workflow",
    "__version__",
    "load_tiers",
    "load_workflow",
]

"""Wan 2.2 workflow graphs: the public names of graph loading, UI conversion, roles and the Variant builder.

The code lives in the module named after each concern, and imports one way (a contract in pyproject.toml):
`variant` (the builder) and `needs` (what a file needs: node packs, model files) on `roles` (what each node does)
and `graph` (loading, validation, Workflow), on `convert` (UI format to API format), `frozen` (frozen copies and
digests) and `nodes` (links, titles, selectors).
"""

from __future__ import annotations

from .graph import FRONTEND_ONLY, NodeInfo, Workflow, load_workflow, validate_graph
from .needs import workflow_needs
from .roles import ROLE_SELECTORS, SAMPLER_CLASSES, node_titles, sampler_nodes
from .variant import DEFAULT_FPS, SCHEDULES, ExpectedOutput, Variant

__all__ = [
    "DEFAULT_FPS",
    "FRONTEND_ONLY",
    "ROLE_SELECTORS",
    "SAMPLER_CLASSES",
    "SCHEDULES",
    "ExpectedOutput",
    "NodeInfo",
    "Variant",
    "Workflow",
    "load_workflow",
    "node_titles",
    "sampler_nodes",
    "validate_graph",
    "workflow_needs",
]

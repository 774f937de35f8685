"""Frozen copies of JSON values (what Workflow and Variant keep), their canonical JSON and its short digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["canonical", "freeze", "short_digest", "thaw"]


def freeze(value: Any) -> Any:
    """A read-only copy: mappings as MappingProxyType, lists as tuples, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A mutable deep copy of a frozen value: dicts and lists again."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """Canonical JSON of a (frozen or plain) value: sorted keys, no spaces, ASCII."""
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def short_digest(text: str) -> str:
    """The first 12 hex digits of the text's sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

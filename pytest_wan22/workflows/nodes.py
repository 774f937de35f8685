"""The nodes of an API-format prompt: links, titles, id order, selectors and what feeds a node.

The workflow modules (graph, roles, variant, needs) share these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_wan22.errors import SelectorError

__all__ = ["Graph", "describe_node", "id_key", "is_link", "matches", "select", "title_of", "upstream"]

Graph = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    """True for an input that links to another node's output: ["<node id>", <output index>]."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def title_of(node: Mapping[str, Any]) -> str | None:
    """The node's _meta.title, or None if it has none."""
    meta = node.get("_meta")
    if isinstance(meta, Mapping):
        title = meta.get("title")
        if isinstance(title, str):
            return title
    return None


def id_key(node_id: str) -> tuple[int, int | str]:
    """Sort key of node ids: numeric ids in numeric order, then the others by name."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def describe_node(graph: Mapping[str, Mapping[str, Any]], node_id: str) -> str:
    """A node for messages: its id, title and class."""
    node = graph[node_id]
    title = title_of(node)
    cls = node.get("class_type", "?")
    return f"{node_id} {title!r} ({cls})" if title else f"{node_id} ({cls}, untitled)"


def _candidates(graph: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(describe_node(graph, i) for i in graph)


def matches(graph: Mapping[str, Mapping[str, Any]], selector: str) -> list[str]:
    """Ids of every node a selector matches (a title, `class:ClassType` or `id:N`), possibly none."""
    if not isinstance(selector, str) or not selector:
        raise SelectorError(f"selector {selector!r} is not a non-empty string; use a node title, "
                            "class:<ClassType> or id:<N>")
    if selector.startswith("id:"):
        wanted = selector[3:]
        return [wanted] if wanted in graph else []
    if selector.startswith("class:"):
        wanted = selector[6:]
        return [i for i, n in graph.items() if n.get("class_type") == wanted]
    return [i for i, n in graph.items() if title_of(n) == selector]


def select(graph: Mapping[str, Mapping[str, Any]], selector: str, where: str) -> str:
    """The id of the one node a selector names; SelectorError listing the nodes if it names none or several."""
    found = matches(graph, selector)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SelectorError(
            f"selector {selector!r} matched no node in {where}; give one of these titles, "
            f"class:<ClassType> or id:<N>. Nodes: {_candidates(graph)}")
    listed = ", ".join(describe_node(graph, i) for i in found)
    raise SelectorError(
        f"selector {selector!r} matched {len(found)} nodes in {where} ({listed}); select one by its "
        f"unique _meta.title or id:<N>, or give the nodes unique titles in the workflow file. "
        f"Nodes: {_candidates(graph)}")


def upstream(graph: Mapping[str, Mapping[str, Any]], node_id: str) -> set[str]:
    """Ids of every node whose output reaches node_id through links."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        current = graph.get(stack.pop())
        if current is None:
            continue
        for value in current.get("inputs", {}).values():
            if is_link(value) and value[0] not in seen:
                seen.add(value[0])
                stack.append(value[0])
    return seen

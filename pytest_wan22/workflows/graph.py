"""Workflow graphs: load API-format (or, with a server's /object_info, UI-format) JSON; select nodes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_wan22.errors import WorkflowError

from .convert import convert_ui, is_ui_format
from .frozen import canonical, freeze, short_digest, thaw
from .nodes import Graph, matches, select, title_of

__all__ = [
    "FRONTEND_ONLY",
    "NodeInfo",
    "Workflow",
    "load_workflow",
    "read_graph",
    "unwrap_prompt",
    "validate_graph",
]

#: Node types the ComfyUI frontend draws but never sends to the server.
FRONTEND_ONLY: frozenset[str] = frozenset({
    "Note", "MarkdownNote", "Reroute", "PrimitiveNode", "SetNode", "GetNode",
    "Anything Everywhere", "Anything Everywhere?", "Anything Everywhere3", "Prompts Everywhere",
    "Seed Everywhere",
})
_EXPORT_HINT = ("export it in API format: in ComfyUI's menu choose Workflow > Export (API) "
                "(older menus: 'Save (API Format)' after enabling dev mode options)")



# --------------------------------------------------------------------------- loading


def validate_graph(graph: Any, where: str) -> None:
    """Raise WorkflowError if `graph` is not a well-formed API-format prompt."""
    if not isinstance(graph, Mapping):
        raise WorkflowError(f"{where}: an API-format workflow is a JSON object of node id -> node, got "
                            f"{type(graph).__name__}; {_EXPORT_HINT}")
    if not graph:
        raise WorkflowError(f"{where}: the workflow has no nodes; {_EXPORT_HINT}")
    for node_id, node in graph.items():
        if not isinstance(node, Mapping):
            raise WorkflowError(f"{where}: node {node_id!r} is {type(node).__name__}, not an object with "
                                f"class_type and inputs; fix the file or {_EXPORT_HINT}")
        cls = node.get("class_type")
        if not isinstance(cls, str) or not cls:
            raise WorkflowError(f"{where}: node {node_id!r} has no class_type; add the node class name "
                                f"(e.g. \"class_type\": \"KSamplerAdvanced\") or {_EXPORT_HINT}")
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping):
            raise WorkflowError(f"{where}: node {node_id!r} ({cls}) has no inputs object; add "
                                f"\"inputs\": {{...}} (empty if the node takes none) or {_EXPORT_HINT}")
        for name, value in inputs.items():
            if not isinstance(value, list):
                continue
            ok_shape = (len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool))
            if not ok_shape or not isinstance(value[0], (str, int)) or isinstance(value[0], bool):
                raise WorkflowError(
                    f"{where}: node {node_id!r} ({cls}) input {name!r} is {value!r}, but a list in API "
                    "format is a link and must be [\"<node id>\", <output index>]; write the link that "
                    "way, or wrap a list value as {\"__value__\": [...]}")
            if not isinstance(value[0], str):
                raise WorkflowError(
                    f"{where}: node {node_id!r} ({cls}) input {name!r} links to node {value[0]!r} as a "
                    f"number; ComfyUI needs the id as a string: [\"{value[0]}\", {value[1]}]")
            if value[0] not in graph:
                raise WorkflowError(
                    f"{where}: node {node_id!r} ({cls}) input {name!r} links to node {value[0]!r}, which "
                    "is not in the workflow; restore that node, relink the input, or re-export the "
                    "workflow (muted/bypassed nodes are left out of API exports)")
        meta = node.get("_meta")
        if meta is not None and not isinstance(meta, Mapping):
            raise WorkflowError(f"{where}: node {node_id!r} ({cls}) has a _meta that is not an object; "
                                "write it as {\"title\": \"...\"}")


def unwrap_prompt(data: Any) -> Any:
    """The prompt of a {"prompt": {...}} request body; any other data as it is."""
    if (isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping)
            and "class_type" not in data["prompt"]):
        return data["prompt"]
    return data



def read_graph(path: str | Path) -> Any:
    """The JSON of a workflow file (a {"prompt": {...}} request body unwrapped); API or UI format."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow {p}: {exc.strerror or exc}; check the path "
                            "(workflows live in the repository's workflows/ folder)") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                            f"fix the file or {_EXPORT_HINT}") from exc
    return unwrap_prompt(data)


def load_workflow(path: str | Path, name: str | None = None, *,
                  object_info: Mapping[str, Any] | None = None) -> Workflow:
    """Read a workflow file: API format as it is; UI format converted against a server's `object_info`.

    A UI-format file whose conversion leaves something undecided raises WorkflowError naming each node,
    input and reason (`convert.convert_ui` gives the prompt and the issues without raising).
    """
    p = Path(path)
    data = read_graph(p)
    if is_ui_format(data):
        if object_info is None:
            raise WorkflowError(
                f"{p} is a UI-format workflow (it has 'nodes' and 'links' lists, as ComfyUI saves it for "
                "the editor); POST /prompt needs API format. Convert it against the server: "
                "load_workflow(path, object_info=client.object_info()), `wan22-check FILE --url URL --to-api "
                f"OUT.json`, or open it in ComfyUI and {_EXPORT_HINT}")
        conversion = convert_ui(data, object_info)
        if conversion.issues:
            raise WorkflowError(
                f"{p}: the UI-format workflow cannot be converted to API format without guessing "
                f"({len(conversion.issues)} issue(s)); fix them in the editor, install the missing node packs, "
                "or export API format from ComfyUI:\n" + conversion.report())
        data = conversion.prompt
    validate_graph(data, str(p))
    return Workflow(data, name=name or p.stem, source=p)


# --------------------------------------------------------------------------- Workflow


@dataclass(frozen=True)
class NodeInfo:
    """One node of a workflow: id, class and title (the class name if untitled)."""

    id: str
    class_type: str
    title: str


class Workflow:
    """An immutable API-format workflow: a frozen copy of the graph; accessors hand out deep copies."""

    __slots__ = ("_digest", "_graph", "_name", "_source")
    _digest: str
    _graph: Mapping[str, Any]
    _name: str
    _source: Path | None

    def __init__(self, graph: Mapping[str, Any], name: str = "workflow",
                 source: str | Path | None = None) -> None:
        validate_graph(graph, str(source) if source else name)
        object.__setattr__(self, "_graph", freeze(graph))
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_source", Path(source) if source is not None else None)
        object.__setattr__(self, "_digest", short_digest(canonical(self._graph)))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Workflow is immutable; build a Variant to change {key!r}")

    def __delattr__(self, key: str) -> None:
        raise AttributeError("Workflow is immutable")

    def __repr__(self) -> str:
        return f"Workflow({self._name!r}, nodes={len(self._graph)}, digest={self._digest})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Workflow):
            return NotImplemented
        return self._name == other._name and self._digest == other._digest

    def __hash__(self) -> int:
        return hash((self._name, self._digest))

    @property
    def name(self) -> str:
        """Short name (file stem); part of the baseline key together with the variant id."""
        return self._name

    @property
    def source(self) -> Path | None:
        """The file it was loaded from, if any."""
        return self._source

    @property
    def digest(self) -> str:
        """Short sha256 of the graph's canonical JSON."""
        return self._digest

    @property
    def graph(self) -> Graph:
        """A deep, mutable copy of the graph."""
        return thaw(self._graph)  # type: ignore[no-any-return]

    def to_prompt(self) -> Graph:
        """A deep copy ready to POST as the `prompt` of /prompt."""
        return self.graph

    def nodes(self) -> tuple[NodeInfo, ...]:
        """Every node in file order."""
        return tuple(NodeInfo(i, n["class_type"], title_of(n) or n["class_type"])
                     for i, n in self._graph.items())

    def select(self, selector: str) -> str:
        """The id of the one node a selector names: a title, `class:ClassType` or `id:N`."""
        return select(self._graph, selector, f"workflow {self._name!r}")

    def select_all(self, selector: str) -> tuple[str, ...]:
        """Ids of every node a selector matches (possibly none)."""
        return tuple(matches(self._graph, selector))

    def node(self, selector: str) -> dict[str, Any]:
        """A deep copy of the node a selector names."""
        return thaw(self._graph[self.select(selector)])  # type: ignore[no-any-return]

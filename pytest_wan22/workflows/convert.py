"""UI-format workflows (the editor's nodes/links JSON) to API format, against a server's /object_info.

The server's /object_info gives each node class's widget order, which the UI format needs to name its
positional `widgets_values`. What the conversion cannot decide is reported (node, input, why), never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_wan22.errors import WorkflowError

__all__ = ["CONTROL_VALUES", "Conversion", "Issue", "convert_ui", "is_ui_format"]

Graph = dict[str, dict[str, Any]]

#: Values of the frontend's extra "control after generate" widget that follows a seed widget.
CONTROL_VALUES: frozenset[str] = frozenset({"fixed", "increment", "decrement", "randomize"})
#: Node types only the editor knows; they never reach the server.
_DROPPED = frozenset({"Note", "MarkdownNote", "Label (rgthree)", "Fast Groups Bypasser (rgthree)",
                      "Fast Groups Muter (rgthree)", "Bookmark (rgthree)", "Image Comparer (rgthree)"})
_EVERYWHERE_PREFIXES = ("Anything Everywhere", "Prompts Everywhere", "Seed Everywhere")
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload", "upload")
_UPLOAD_VALUES = frozenset({"image", "video", "audio", "upload"})
_SUBGRAPH_INPUT, _SUBGRAPH_OUTPUT = -10, -20
_MUTED, _BYPASSED = 2, 4


@dataclass(frozen=True)
class Issue:
    """Something the conversion could not decide: the node, the input (if any) and why."""

    node_id: str
    class_type: str
    input: str | None
    message: str

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input:
            where += f" input {self.input!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Conversion:
    """The API prompt, what could not be decided, and what was left out on purpose."""

    prompt: Graph
    issues: tuple[Issue, ...]
    dropped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every node and input could be named."""
        return not self.issues

    def report(self) -> str:
        """One line per issue."""
        return "\n".join(str(i) for i in self.issues) if self.issues else "converted without issues"


def is_ui_format(data: Any) -> bool:
    """True for the editor's format: a `nodes` list (with `links`, `last_node_id` or subgraph definitions)."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and (
        isinstance(data.get("links"), list) or "last_node_id" in data or "definitions" in data)


# --------------------------------------------------------------------------- flattening

Source = tuple[str, int]  # (flat node id, output slot)


@dataclass
class _In:
    name: str
    type: Any
    widget: str | None
    source: Source | None


@dataclass
class _Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: list[_In]
    outputs: list[tuple[str, Any]]
    widgets: Any
    props: Mapping[str, Any]
    scope: str = ""
    #: widget name -> value promoted onto a subgraph instance (applies to this inner node)
    promoted: dict[str, Any] = field(default_factory=dict)


def _link_table(links: Any) -> dict[int, tuple[int, int, int, int]]:
    """link id -> (origin id, origin slot, target id, target slot); list or dict encoding."""
    out: dict[int, tuple[int, int, int, int]] = {}
    for link in links or []:
        if isinstance(link, Mapping):
            lid, a, s, b, t = (link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot"))
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            lid, a, s, b, t = link[:5]
        else:
            continue
        try:
            out[int(lid)] = (int(a), int(s), int(b), int(t))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


class _Converter:
    def __init__(self, data: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.data = data
        self.info = object_info
        self.issues: list[Issue] = []
        self.dropped: list[str] = []
        self.nodes: dict[str, _Node] = {}
        #: (pseudo) output -> where it really comes from; a value, or None (unconnected)
        self.alias: dict[Source, Source | tuple[str, Any] | None] = {}
        defs = data.get("definitions")
        subgraphs = defs.get("subgraphs", []) if isinstance(defs, Mapping) else []
        self.subgraphs = {str(s.get("id")): s for s in subgraphs if isinstance(s, Mapping)}
        extra = data.get("extra")
        groups = extra.get("groupNodes") if isinstance(extra, Mapping) else None
        self.group_nodes: Mapping[str, Any] = groups if isinstance(groups, Mapping) else {}
        self.misaligned: set[str] = set()
        self.unconnected: list[tuple[_Node, str]] = []

    def issue(self, node: _Node | None, name: str | None, message: str) -> None:
        self.issues.append(Issue(node.id if node else "", node.type if node else "", name, message))

    # ----------------------------------------------------------------- reading a graph level

    def read_level(self, nodes: Sequence[Any], links: Any, scope: str, depth: int,
                   instance: _Node | None) -> None:
        """Add this level's nodes; inner nodes of subgraph instances get ids 'instance:inner'."""
        if depth > 16:
            raise WorkflowError(f"subgraphs nest deeper than 16 levels at {scope!r}; is a subgraph its own child?")
        table = _link_table(links)

        def src(link: Any) -> Source | None:
            if link is None or not isinstance(link, int) or link not in table:
                return None
            origin, slot = table[link][0], table[link][1]
            if origin == _SUBGRAPH_INPUT:
                return (f"{scope}::in", slot)
            return (f"{scope}{origin}", slot)

        for raw in nodes:
            if not isinstance(raw, Mapping) or "id" not in raw:
                continue
            node_id = f"{scope}{raw['id']}"
            mode = raw.get("mode", 0) if isinstance(raw.get("mode"), int) else 0
            if instance is not None and instance.mode in (_MUTED, _BYPASSED) and mode == 0:
                mode = instance.mode
            props: Mapping[str, Any] = raw["properties"] if isinstance(raw.get("properties"), Mapping) else {}
            inputs = [_In(str(i.get("name")), i.get("type"),
                          (i.get("widget") or {}).get("name") if isinstance(i.get("widget"), Mapping) else None,
                          src(i.get("link")))
                      for i in raw.get("inputs") or [] if isinstance(i, Mapping)]
            outputs = [(str(o.get("name")), o.get("type")) for o in raw.get("outputs") or [] if isinstance(o, Mapping)]
            title = raw.get("title") if isinstance(raw.get("title"), str) else None
            node = _Node(node_id, str(raw.get("type")), mode, title, inputs, outputs, raw.get("widgets_values"),
                         props, scope)
            self.nodes[node_id] = node
            if node.type in self.subgraphs:
                self.read_subgraph(node, depth)
            elif node.type in self.group_nodes or node.type.startswith(("workflow>", "workflow/")):
                self.read_group_node(node)
        # outputs of this level's subgraph boundary: links into the output node
        if instance is not None:
            out_map = instance.props.get("_outputs") or {}
            for _lid, (origin, slot, target, tslot) in table.items():
                if target == _SUBGRAPH_OUTPUT:
                    self.alias[(instance.id, out_map.get(tslot, tslot))] = (
                        (f"{scope}::in", slot) if origin == _SUBGRAPH_INPUT else (f"{scope}{origin}", slot))

    def read_subgraph(self, inst: _Node, depth: int) -> None:
        definition = self.subgraphs[inst.type]
        scope = f"{inst.id}:"
        # the instance's inputs feed the inner level's input node; definition and instance slots pair by name
        for slot, inp in enumerate(inst.inputs):
            self.alias[(f"{scope}::inst", slot)] = inp.source
        by_name = {inp.name: slot for slot, inp in enumerate(inst.inputs)}
        for k, spec in enumerate(definition.get("inputs") or []):
            name = spec.get("name") if isinstance(spec, Mapping) else None
            self.alias[(f"{scope}::in", k)] = (f"{scope}::inst", by_name[name]) if name in by_name else None
        if not definition.get("inputs"):
            for slot in range(len(inst.inputs)):
                self.alias[(f"{scope}::in", slot)] = (f"{scope}::inst", slot)
        out_names = {o[0]: slot for slot, o in enumerate(inst.outputs)}
        inst.props = {**inst.props, "_outputs": {
            k: out_names.get(str(spec.get("name")), k) if isinstance(spec, Mapping) else k
            for k, spec in enumerate(definition.get("outputs") or [])}}
        values = inst.widgets
        proxies = inst.props.get("proxyWidgets")
        self.nodes.pop(inst.id)
        self.read_level(definition.get("nodes") or [], definition.get("links"), scope, depth + 1, inst)
        if isinstance(values, list) and values:
            if isinstance(proxies, list) and len(proxies) == len(values):
                for (inner, name), value in zip(proxies, values, strict=True):
                    target = self.nodes.get(f"{scope}{inner}")
                    if target is not None:
                        target.promoted[str(name)] = value
            else:
                widget_inputs = [(slot, i) for slot, i in enumerate(inst.inputs) if i.widget]
                # older files: one value per widget-typed input of the definition, in its order
                specs = [(k, d) for k, d in enumerate(definition.get("inputs") or []) if isinstance(d, Mapping)]
                widget_defs = [(k, d) for k, d in specs if d.get("type") in _WIDGET_TYPES]
                if len(widget_inputs) == len(values):
                    for (slot, _inp), value in zip(widget_inputs, values, strict=True):
                        if self.alias.get((f"{scope}::inst", slot)) is None:
                            self.alias[(f"{scope}::inst", slot)] = ("value", value)
                elif len(widget_defs) == len(values):
                    for (k, _d), value in zip(widget_defs, values, strict=True):
                        if self.resolve((f"{scope}::in", k)) is None:
                            self.alias[(f"{scope}::in", k)] = ("value", value)
                else:
                    self.issue(inst, None, f"subgraph instance stores {len(values)} widget values for "
                               f"{len(widget_inputs)} promoted widgets ({len(widget_defs)} widget inputs in its "
                               "definition); cannot tell which value goes where")
        # an instance output nobody inside feeds stays unconnected
        for slot in range(len(inst.outputs)):
            self.alias.setdefault((inst.id, slot), None)

    def read_group_node(self, inst: _Node) -> None:
        """Expand a legacy group node (extra.groupNodes) the way the editor lays it out.

        Its inner nodes get ids 'instance:index'. The instance's widgets are the inner nodes' own widgets in
        node order (a seed's control value and an upload button included); its inputs are the inner sockets
        not linked inside the group, then the inner widgets converted to sockets; its outputs are the inner
        outputs not used only inside. Any count that does not add up is reported, never guessed.
        """
        self.nodes.pop(inst.id)
        name = inst.type.split(">", 1)[1] if ">" in inst.type else inst.type.removeprefix("workflow/")
        definition = self.group_nodes.get(name)
        if not isinstance(definition, Mapping):
            self.issue(inst, None, f"group node {name!r} has no definition in extra.groupNodes; open the file in "
                       "a current ComfyUI (it turns group nodes into subgraphs) and save it again")
            return
        inner = [n for n in definition.get("nodes") or [] if isinstance(n, Mapping)]
        links_to: dict[tuple[int, int], tuple[int, int]] = {}
        used_inside: set[tuple[int, int]] = set()
        for link in definition.get("links") or []:
            if isinstance(link, (list, tuple)) and len(link) >= 4 and all(isinstance(x, int) for x in link[:4]):
                links_to[(link[2], link[3])] = (link[0], link[1])
                used_inside.add((link[0], link[1]))
        external = {(e[0], e[1]) for e in definition.get("external") or []
                    if isinstance(e, (list, tuple)) and len(e) >= 2}
        for raw in inner:
            if raw.get("type") not in self.info:
                self.issue(inst, None, f"group node {name!r} holds a {raw.get('type')!r} node, which the server does "
                           "not describe; its slot and widget layout cannot be worked out (install the pack, or "
                           "save the file from a current ComfyUI, which turns group nodes into subgraphs)")
                return
        widgets: list[tuple[int, str] | None] = []  # the instance's widget values, in order
        plain: list[tuple[int, int]] = []  # (inner index, inner slot) of the instance's inputs
        converted: list[tuple[int, int]] = []
        outputs: list[tuple[int, int]] = []
        for i, raw in enumerate(inner):
            raw_inputs = [x for x in raw.get("inputs") or [] if isinstance(x, Mapping)]
            converted_names = {x["widget"].get("name") for x in raw_inputs if isinstance(x.get("widget"), Mapping)}
            for wname, kind, extra in self.widget_specs(str(raw["type"])):
                if wname in converted_names:
                    continue
                widgets.append((i, wname))
                if _extra_widget(wname, kind, extra):
                    widgets.append(None)
            for j, x in enumerate(raw_inputs):
                if (i, j) in links_to:
                    continue
                (converted if isinstance(x.get("widget"), Mapping) else plain).append((i, j))
            for o in range(len(self.info[str(raw["type"])].get("output") or [])):
                if (i, o) not in used_inside or (i, o) in external:
                    outputs.append((i, o))
        values = inst.widgets if isinstance(inst.widgets, list) else []
        sockets = [x for x in inst.inputs if x.widget is None]
        problems = []
        if len(values) != len(widgets):
            problems.append(f"{len(values)} widget values for {len(widgets)} inner widgets")
        if len(sockets) != len(plain) + len(converted):
            problems.append(f"{len(sockets)} inputs for {len(plain) + len(converted)} open inner sockets")
        if len(inst.outputs) != len(outputs):
            problems.append(f"{len(inst.outputs)} outputs for {len(outputs)} inner outputs")
        if problems:
            self.issue(inst, None, f"group node {name!r} does not match the layout its inner nodes give ("
                       + "; ".join(problems) + "); save the file from a current ComfyUI, which turns group nodes "
                       "into subgraphs")
            return
        named: dict[int, dict[str, Any]] = {i: {} for i in range(len(inner))}
        converted_links: dict[int, list[_In]] = {}
        for slot, value in zip(widgets, values, strict=True):
            if slot is not None:
                named.setdefault(slot[0], {})[slot[1]] = value
        outer = dict(zip(plain + converted, (x.source for x in sockets), strict=True))
        for sock in inst.inputs:  # group widgets the instance turned into sockets
            if sock.widget is None or sock.source is None:
                continue
            match = [w for w in widgets if w is not None and sock.widget in (
                w[1], f"{inner[w[0]].get('title') or inner[w[0]].get('type')} {w[1]}")]
            if len(match) != 1:
                self.issue(inst, sock.widget, f"group node {name!r}: the linked widget matches {len(match)} inner "
                           "widgets; cannot tell which one it feeds")
                continue
            named[match[0][0]].pop(match[0][1], None)
            converted_links.setdefault(match[0][0], []).append(
                _In(match[0][1], sock.type, match[0][1], sock.source))
        scope = f"{inst.id}:"
        for i, raw in enumerate(inner):
            raw_inputs = [x for x in raw.get("inputs") or [] if isinstance(x, Mapping)]
            ins = []
            for j, x in enumerate(raw_inputs):
                widget = x["widget"].get("name") if isinstance(x.get("widget"), Mapping) else None
                origin = links_to.get((i, j))
                source = (f"{scope}{origin[0]}", origin[1]) if origin else outer.get((i, j))
                ins.append(_In(str(x.get("name")), x.get("type"), widget, source))
            ins += converted_links.get(i, [])
            mode = raw.get("mode", 0) if isinstance(raw.get("mode"), int) else 0
            node = _Node(f"{scope}{i}", str(raw["type"]), inst.mode if inst.mode in (_MUTED, _BYPASSED) else mode,
                         raw.get("title") if isinstance(raw.get("title"), str) else None, ins,
                         [(str(o.get("name")), o.get("type")) for o in raw.get("outputs") or []
                          if isinstance(o, Mapping)],
                         named.get(i, {}), {}, scope)
            self.nodes[node.id] = node
        for k, (i, o) in enumerate(outputs):
            self.alias[(inst.id, k)] = (f"{scope}{i}", o)

    # ----------------------------------------------------------------- virtual nodes

    def resolve_virtuals(self) -> None:
        setters: dict[str, list[_Node]] = {}
        for node in self.nodes.values():
            if node.type == "SetNode" and node.mode != _MUTED:
                setters.setdefault(str(self.first_widget(node)), []).append(node)
        for node in list(self.nodes.values()):
            kind = node.type
            if kind == "Reroute":
                self.alias[(node.id, 0)] = node.inputs[0].source if node.inputs else None
            elif kind == "PrimitiveNode":
                values = node.widgets if isinstance(node.widgets, list) else []
                if values:
                    self.alias[(node.id, 0)] = ("value", values[0])
                else:
                    self.issue(node, None, "PrimitiveNode stores no value")
                    self.alias[(node.id, 0)] = None
            elif kind == "SetNode":
                self.alias[(node.id, 0)] = node.inputs[0].source if node.inputs else None
            elif kind == "GetNode":
                name = str(self.first_widget(node))
                found = setters.get(name, [])
                if len(found) == 1 and found[0].inputs:
                    self.alias[(node.id, 0)] = found[0].inputs[0].source
                else:
                    why = "no SetNode" if not found else f"{len(found)} SetNodes"
                    self.issue(node, None, f"GetNode {name!r}: {why} with that name; its consumers get no input")
                    self.alias[(node.id, 0)] = None
            else:
                continue
            self.nodes.pop(node.id)
            self.dropped.append(f"{node.id} {kind} (virtual wire, resolved)")

    @staticmethod
    def first_widget(node: _Node) -> Any:
        if isinstance(node.widgets, list) and node.widgets:
            return node.widgets[0]
        return node.title

    def apply_ue_links(self) -> None:
        """cg-use-everywhere's invisible links, as recorded in extra.ue_links."""
        extra = self.data.get("extra")
        links = extra.get("ue_links") if isinstance(extra, Mapping) else None
        for link in links or []:
            if not isinstance(link, Mapping):
                continue
            target = self.nodes.get(str(link.get("downstream")))
            slot = link.get("downstream_slot")
            if target is None or not isinstance(slot, int):
                # a subgraph instance: its input slot feeds the inner level
                key = (f"{link.get('downstream')}:::inst", slot)
                if isinstance(slot, int) and key in self.alias and self.alias[key] is None:
                    self.alias[key] = (str(link.get("upstream")), int(link.get("upstream_slot", 0)))
                continue
            if 0 <= slot < len(target.inputs) and target.inputs[slot].source is None:
                target.inputs[slot].source = (str(link.get("upstream")), int(link.get("upstream_slot", 0)))
        for node in list(self.nodes.values()):
            if node.type.startswith(_EVERYWHERE_PREFIXES):
                self.nodes.pop(node.id)
                self.dropped.append(f"{node.id} {node.type} (virtual broadcaster; extra.ue_links applied)")

    def bypass(self) -> None:
        for node in list(self.nodes.values()):
            if node.mode != _BYPASSED:
                continue
            for slot, (_name, out_type) in enumerate(node.outputs):
                match = [i for i in node.inputs if _same_type(i.type, out_type) and i.source is not None]
                same_slot = node.inputs[slot] if slot < len(node.inputs) else None
                pick = same_slot if same_slot in match else (match[0] if match else None)
                self.alias[(node.id, slot)] = pick.source if pick else None
            self.nodes.pop(node.id)
            self.dropped.append(f"{node.id} {node.type} (bypassed)")

    def resolve(self, source: Source | None) -> Source | tuple[str, Any] | None:
        seen: set[Source] = set()
        current: Any = source
        while isinstance(current, tuple) and current and current[0] != "value" and current in self.alias:
            if current in seen:
                return None
            seen.add(current)
            current = self.alias[current]
        return current  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- naming inputs

    def widget_specs(self, cls: str) -> list[tuple[str, Any, Mapping[str, Any]]]:
        info = self.info[cls]
        spec_all = info.get("input") or {}
        order = info.get("input_order") or {}
        out: list[tuple[str, Any, Mapping[str, Any]]] = []
        for category in ("required", "optional"):
            specs = spec_all.get(category) or {}
            names = order.get(category) or list(specs)
            for name in names:
                spec = specs.get(name)
                if not isinstance(spec, (list, tuple)) or not spec:
                    continue
                head = spec[0]
                extra = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
                kind = "COMBO" if isinstance(head, (list, tuple)) else head
                if kind in _WIDGET_TYPES and not extra.get("forceInput") and not extra.get("rawLink"):
                    out.append((name, kind, extra))
        return out

    def widget_values(self, node: _Node) -> dict[str, Any]:
        """Widget name -> value, from the positional (or, VHS style, named) widgets_values."""
        values = node.widgets
        if values is None:
            return {}
        specs = self.widget_specs(node.type)
        names = {s[0] for s in specs}
        if isinstance(values, Mapping):
            # named values (VideoHelperSuite): keep every input value, drop the editor's preview state
            return {str(k): v for k, v in values.items() if k in names or not isinstance(v, (Mapping, list))}
        if not isinstance(values, list):
            self.issue(node, None, f"widgets_values is a {type(values).__name__}, not a list or object")
            return {}
        out: dict[str, Any] = {}
        pos = 0
        for name, kind, extra in specs:
            if pos >= len(values):
                break
            value = values[pos]
            pos += 1
            if not _fits(value, kind):
                rest = [n for n, _k, _e in specs[specs.index((name, kind, extra)) + 1:]]
                if value in ("", None) and pos == len(values) and not rest:
                    # the last stored value is empty where the node's last widget is: the editor saved no value
                    # for an input it did not know yet; the server's default stands, nothing after it is shifted
                    self.dropped.append(f"{node.id} {node.type} input {name!r} (stored value {value!r} is not a "
                                        f"{kind}; the server's default applies)")
                    return out
                self.misaligned.add(node.id)
                self.issue(node, name, f"stored widget value {value!r} (position {pos - 1}) is not a {kind}: the "
                           "file's widget order differs from this server's /object_info (another version of the "
                           "node); " + (f"it and {', '.join(rest)} are" if rest else "it is")
                           + " left unset (server defaults), the inputs before it are named")
                return out
            out[name] = value
            if _extra_widget(name, kind, extra) and pos < len(values) and isinstance(values[pos], str) \
                    and values[pos] in (CONTROL_VALUES if kind == "INT" else _UPLOAD_VALUES):
                pos += 1  # the frontend's "control after generate" widget, or the upload button's value
        return out

    def node_inputs(self, node: _Node) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        known = node.type in self.info
        if known:
            inputs.update(self.widget_values(node))
        elif isinstance(node.widgets, Mapping):
            inputs.update({str(k): v for k, v in node.widgets.items()})
        elif isinstance(node.widgets, list) and node.widgets:
            self.issue(node, None, f"class {node.type!r} is not on the server, and the file stores its "
                       f"{len(node.widgets)} widget values by position only; they cannot be named (install the "
                       "pack that provides it and convert again)")
        inputs.update(node.promoted)
        for inp in node.inputs:
            if inp.source is None and inp.widget is None:
                # an unlinked socket; ue_links or nothing
                continue
            resolved = self.resolve(inp.source) if inp.source is not None else None
            name = inp.widget or inp.name
            if resolved is None:
                if inp.source is not None and inp.widget is None:
                    self.unconnected.append((node, inp.name))
                continue
            if resolved[0] == "value":
                inputs[name] = resolved[1]
            elif resolved[0] in self.nodes:
                inputs[name] = [resolved[0], resolved[1]]
            else:
                self.unconnected.append((node, name))
        return inputs

    # ----------------------------------------------------------------- running

    def run(self) -> Conversion:
        self.read_level(self.data.get("nodes") or [], self.data.get("links"), "", 0, None)
        for node in list(self.nodes.values()):
            if node.type in _DROPPED:
                self.nodes.pop(node.id)
                self.dropped.append(f"{node.id} {node.type} (frontend only)")
        self.apply_ue_links()
        self.resolve_virtuals()
        self.bypass()
        muted = {i: n for i, n in self.nodes.items() if n.mode == _MUTED}
        for node in muted.values():
            self.nodes.pop(node.id)
            self.dropped.append(f"{node.id} {node.type} (muted)")
        prompt: Graph = {}
        for node_id, node in self.nodes.items():
            entry: dict[str, Any] = {"inputs": self.node_inputs(node), "class_type": node.type}
            title = node.title or (self.info.get(node.type) or {}).get("display_name") or node.type
            entry["_meta"] = {"title": title}
            prompt[node_id] = entry
        self.drop_muted_feeders(prompt, muted)
        self.check_required(prompt)
        return Conversion(prompt, tuple(self.issues), tuple(self.dropped))

    def drop_muted_feeders(self, prompt: Graph, muted: Mapping[str, _Node]) -> None:
        """Drop nodes whose every consumer is muted (or dropped for that reason), unless they are outputs."""
        consumers: dict[str, set[str]] = {i: set() for i in prompt}
        for node in [*self.nodes.values(), *muted.values()]:
            for inp in node.inputs:
                res = self.resolve(inp.source) if inp.source else None
                if res is not None and res[0] != "value" and res[0] in consumers:
                    consumers[res[0]].add(node.id)
        gone = set(muted)
        changed = True
        while changed:
            changed = False
            for node_id in list(prompt):
                users = consumers.get(node_id, set())
                if users and users <= gone and not self.is_output(prompt[node_id]["class_type"]):
                    del prompt[node_id]
                    gone.add(node_id)
                    self.dropped.append(f"{node_id} {self.nodes[node_id].type} (only feeds muted nodes)")
                    changed = True

    def is_output(self, cls: str) -> bool:
        info = self.info.get(cls)
        return bool(info.get("output_node")) if isinstance(info, Mapping) else True

    def check_required(self, prompt: Graph) -> None:
        for node_id, entry in prompt.items():
            info = self.info.get(entry["class_type"])
            if not isinstance(info, Mapping):
                continue
            if node_id in self.misaligned:
                continue  # reported with its widget values
            required = (info.get("input") or {}).get("required") or {}
            for name, spec in required.items():
                if name in entry["inputs"]:
                    continue
                head = spec[0] if isinstance(spec, (list, tuple)) and spec else None
                if isinstance(head, str) and head.startswith("COMFY_"):
                    continue
                node = self.nodes[node_id]
                if any(u[0] is node and u[1] == name for u in self.unconnected):
                    self.issue(node, name, "required input is linked to a muted, bypassed or missing node "
                               "(nothing of its type passes through)")
                else:
                    self.issue(node, name, "required input has no link and no stored value")
        for node, name in self.unconnected:
            if node.id in prompt and node.type not in self.info:
                self.issue(node, name, "linked to a muted, bypassed or missing node; the class is not on "
                           "the server, so whether the input is required is unknown")


def _extra_widget(name: str, kind: Any, extra: Mapping[str, Any]) -> bool:
    """Whether the editor adds a widget after this one: a seed's "control after generate", an upload button."""
    if kind == "INT":
        return bool(extra.get("control_after_generate")) or name in ("seed", "noise_seed")
    return kind == "COMBO" and any(extra.get(f) for f in _UPLOAD_FLAGS)


def _same_type(a: Any, b: Any) -> bool:
    """Socket types that pass through a bypassed node: equal, overlapping comma lists, or '*'."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    left, right = {t.strip() for t in a.split(",")}, {t.strip() for t in b.split(",")}
    return bool(left & right) or "*" in left | right


def _fits(value: Any, kind: str) -> bool:
    if kind == "INT":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if kind == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    return value is None or isinstance(value, (str, int, float, bool, list))


def convert_ui(data: Mapping[str, Any], object_info: Mapping[str, Any]) -> Conversion:
    """Convert a UI-format workflow to an API prompt using the server's /object_info for widget order."""
    if not is_ui_format(data):
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links' lists); API-format files need "
                            "no conversion")
    return _Converter(data, object_info).run()

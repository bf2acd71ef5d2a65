"""The HTML builder's form ↔ definition conversion (server-rendered, htmx re-renders it).

The builder posts one hidden ``node`` input per tree node, holding its path (``0`` is the
root group, ``0.2`` its third child …), and inputs named ``<path>:<key>`` for the node's
values. Parsing turns them back into a definition; values are typed by the field's type
so that validation can name what is wrong. Anything the rows cannot show (a provider
condition, a ``not`` around one condition) is kept as an editable JSON row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .definition import GROUP_KEYS, field_for

ROW_TYPES = ("group", "profile", "behaviour", "segment", "json")
BEHAVIOUR_TEXT = ("url_contains", "form", "content_type")
BEHAVIOUR_INTS = ("campaign", "min_count", "max_count", "within_last_days")
ATTRIBUTE_NUMBER_OPS = ("gt", "lt", "gte", "lte", "between", "equals", "not_equals", "in", "not_in")


@dataclass
class Row:
    path: str
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    children: list[Row] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.path.count(".")


def to_tree(definition: Any, path: str = "0") -> Row:
    """A definition as builder rows; the root is always a group."""
    node = definition if isinstance(definition, dict) else {}
    if not node:
        return Row(path, "group", {"mode": "all"})
    row = _row(node, path)
    if row.type != "group":
        row = Row(path, "group", {"mode": "all"}, [_row(node, f"{path}.0")])
    return row


def _row(node: Any, path: str) -> Row:
    if isinstance(node, dict) and len(node) == 1 and next(iter(node)) in GROUP_KEYS:
        key = next(iter(node))
        inner = node[key]
        mode = key
        if key == "not":
            if not (isinstance(inner, dict) and list(inner) == ["any"]):
                return Row(path, "json", {"json": json.dumps(node)})
            mode, inner = "none", inner["any"]
        if not isinstance(inner, list):
            return Row(path, "json", {"json": json.dumps(node)})
        row = Row(path, "group", {"mode": mode})
        row.children = [_row(child, f"{path}.{i}") for i, child in enumerate(inner)]
        return row
    if isinstance(node, dict) and "field" in node and set(node) <= {"field", "op", "value"}:
        value = node.get("value")
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        else:
            text = (
                ""
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
        return Row(
            path, "profile", {"field": node.get("field"), "op": node.get("op"), "value": text}
        )
    if isinstance(node, dict) and ("did" in node or "did_not" in node):
        between = node.get("between")
        if between is not None and not (isinstance(between, list) and len(between) == 2):
            return Row(path, "json", {"json": json.dumps(node)})
        values = {"mode": "did" if "did" in node else "did_not"}
        values["kind"] = node.get("did") or node.get("did_not")
        for key in (*BEHAVIOUR_TEXT, *BEHAVIOUR_INTS):
            values[key] = "" if node.get(key) is None else str(node[key])
        values["between_from"], values["between_to"] = (str(d) for d in between or ("", ""))
        return Row(path, "behaviour", values)
    if (
        isinstance(node, dict)
        and len(node) == 1
        and next(iter(node))
        in (
            "in_segment",
            "not_in_segment",
        )
    ):
        key = next(iter(node))
        return Row(path, "segment", {"mode": key, "segment": str(node[key])})
    return Row(path, "json", {"json": json.dumps(node)})


def from_tree(row: Row) -> Any:
    if row.type == "group":
        children = [from_tree(c) for c in row.children]
        mode = row.values.get("mode", "all")
        if mode == "none":
            return {"not": {"any": children}}
        return {"any" if mode == "any" else "all": children}
    v = row.values
    if row.type == "profile":
        cond = {"field": v.get("field", ""), "op": v.get("op", "")}
        if cond["op"] not in ("is_empty", "is_not_empty"):
            cond["value"] = _typed_value(cond["field"], cond["op"], v.get("value", ""))
        return cond
    if row.type == "behaviour":
        cond = {v.get("mode") if v.get("mode") in ("did", "did_not") else "did": v.get("kind", "")}
        for key in BEHAVIOUR_TEXT:
            if v.get(key):
                cond[key] = v[key]
        for key in BEHAVIOUR_INTS:
            if v.get(key, "") != "":
                cond[key] = _number(v[key])
        if v.get("between_from") or v.get("between_to"):
            # Validation names a missing or malformed end ("between" needs two dates).
            cond["between"] = [v.get("between_from", ""), v.get("between_to", "")]
        return cond
    if row.type == "segment":
        mode = v.get("mode") if v.get("mode") in ("in_segment", "not_in_segment") else "in_segment"
        return {mode: _number(v.get("segment", ""))}
    try:
        return json.loads(v.get("json") or "{}")
    except ValueError:
        return {"invalid_json": v.get("json", "")[:100]}


def _number(text: str) -> Any:
    text = (text or "").strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _typed_value(field_name: str, op: str, text: str) -> Any:
    fld = field_for(field_name)
    kind = fld.type if fld else "text"
    if op in ("in", "not_in", "between"):
        parts = [p.strip() for p in (text or "").split(",") if p.strip()]
        return [_scalar(kind, p, op) for p in parts]
    return _scalar(kind, (text or "").strip(), op)


def _scalar(kind: str, text: str, op: str) -> Any:
    if op == "within_last_days" or kind in ("number", "ref"):
        return _number(text)
    if kind == "attribute":
        if text in ("true", "false"):
            return text == "true"
        # An attribute has no declared type: what is typed decides ("10, 50" is a number
        # range, "2026-01-01, 2026-03-31" a date range). Text operators keep the text.
        return _number(text) if op in ATTRIBUTE_NUMBER_OPS else text
    return text


def parse_post(data) -> Row:
    """Rows from the builder's POST (a QueryDict): the inverse of rendering :func:`to_tree`."""
    rows: dict[str, Row] = {}
    for path in data.getlist("node"):
        if not _valid_path(path) or path in rows:
            continue
        row_type = data.get(f"{path}:type", "json")
        row_type = row_type if row_type in ROW_TYPES else "json"
        prefix = f"{path}:"
        values = {k.removeprefix(prefix): data.get(k) for k in data if k.startswith(prefix)}
        rows[path] = Row(path, row_type, values)
    root = rows.get("0") or Row("0", "group", {"mode": "all"})
    root.type = "group"
    for path, row in rows.items():
        if path == "0":
            continue
        parent = rows.get(path.rsplit(".", 1)[0])
        if parent is not None and parent.type == "group":
            parent.children.append(row)
    return root


def _valid_path(path: str) -> bool:
    parts = path.split(".")
    return 0 < len(parts) <= 10 and parts[0] == "0" and all(p.isdigit() for p in parts)


def apply_action(definition: Any, action: str) -> Any:
    """Add or remove a node: ``add-<type>:<group path>`` or ``remove:<path>``."""
    verb, _, path = (action or "").partition(":")
    root = to_tree(definition)
    index = _index(root)
    if verb == "remove" and path in index and path != "0":
        parent = index[path.rsplit(".", 1)[0]]
        parent.children = [c for c in parent.children if c.path != path]
    elif verb.startswith("add-") and index.get(path) and index[path].type == "group":
        new = {
            "add-profile": Row(
                "", "profile", {"field": "job_title", "op": "contains", "value": ""}
            ),
            "add-behaviour": Row(
                "", "behaviour", {"mode": "did", "kind": "page_visit", "within_last_days": "30"}
            ),
            "add-segment": Row("", "segment", {"mode": "in_segment", "segment": ""}),
            "add-group": Row("", "group", {"mode": "any"}),
        }.get(verb)
        if new is not None:
            index[path].children.append(new)
    return from_tree(root)


def _index(row: Row) -> dict[str, Row]:
    out = {row.path: row}
    for child in row.children:
        out.update(_index(child))
    return out

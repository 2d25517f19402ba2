"""Load a YAML data file into a pydantic model, failing with the file and line that is wrong.

Rules, providers and scan profiles are data an operator may replace; a mistake there must stop
the program at start-up with a message that points at the line, not a traceback.
Imports: PyYAML, pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Data files are written by admins, but still have a size limit: a runaway file should fail with
# a message, not eat a worker's memory.
_MAX_DATA_FILE_BYTES = 1_000_000
# A path beside this module rather than importlib.resources: the package ships as plain files
# (package-data in pyproject.toml), and Python 3.11's importlib.resources raises
# NotADirectoryError for a package that a setuptools editable install registered as a namespace.
PACKAGED_DATA = Path(__file__).with_name("data")

ModelT = TypeVar("ModelT", bound=BaseModel)


class DataFileError(Exception):
    """A data file that cannot be used; the message names the file, the line and the problem."""


def load_data_file(
    source: Path,
    model: type[ModelT],
    *,
    error: type[Exception] = DataFileError,
    unique_ids_in: Sequence[str] = (),
) -> ModelT:
    """Parse and validate a YAML data file, raising ``error`` with file and line on any problem."""
    name = str(source)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise error(f"{name}: cannot read the file: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_DATA_FILE_BYTES:
        raise error(f"{name}: the file is larger than {_MAX_DATA_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name}: not UTF-8 text (byte {exc.start})") from exc

    root, data = _parse_yaml(text, name, error)
    if root is None or data is None:
        raise error(f"{name}: the file is empty")
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_problem(name, root, data, problem) for problem in exc.errors()]
        raise error("\n".join(problems)) from None
    for key in unique_ids_in:
        _check_unique_ids(name, root, data, key, error)
    return document


def _parse_yaml(text: str, name: str, error: type[Exception]) -> tuple[Node | None, object]:
    # Compose first, construct second: the node tree keeps line numbers for error messages, and
    # it must be checked before construction because merge keys rewrite nodes in place.
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        # The reader refuses control characters (ESC, NUL, ...) before parsing and knows only
        # the offset: turn it into line:column like every other YAML error.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise error(
            f"{name}:{line}:{column}: malformed YAML: control character "
            f"#x{int(exc.character):04x} is not allowed"
        ) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_nodes(root, name, error)
        data: object = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise error(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{name}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    return root, data


def _check_nodes(root: Node, name: str, error: type[Exception]) -> None:
    # PyYAML silently keeps the last of two equal keys, which hides a typo'd rule; and aliases
    # share nodes, so one anchor can expand into a huge document ("billion laughs"). Data files
    # need neither, so both are refused with the line they are on.
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            raise error(f"{name}:{_line(node)}: anchors and aliases (& and *) are not supported")
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):
                    if key_node.value in keys:
                        raise error(
                            f"{name}:{_line(key_node)}: key {key_node.value!r:.80} appears twice "
                            "in the same mapping"
                        )
                    keys.add(key_node.value)
                pending.extend((key_node, value_node))
        elif isinstance(node, SequenceNode):
            pending.extend(node.value)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1 if node.start_mark else 1


def _node_at(root: Node, location: Sequence[int | str]) -> Node:
    """Return the deepest node along a pydantic error location (the field, or its parent)."""
    node = root
    for step in location:
        child: Node | None = None
        if isinstance(node, MappingNode):
            child = next(
                (
                    value
                    for key, value in node.value
                    if isinstance(key, ScalarNode) and key.value == str(step)
                ),
                None,
            )
        elif isinstance(node, SequenceNode) and isinstance(step, int):
            child = node.value[step] if 0 <= step < len(node.value) else None
        if child is None:
            break
        node = child
    return node


def _value_at(data: object, location: Sequence[int | str]) -> object:
    value = data
    for step in location:
        if isinstance(value, Mapping) and step in value:
            value = value[step]
            continue
        if isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
            continue
        return None
    return value


def _describe_item(data: object, location: Sequence[int | str]) -> tuple[str, list[int | str]]:
    """Split a location into "rules[3] (id 'ftp')" and the field path inside that item."""
    if len(location) >= 2 and isinstance(location[0], str) and isinstance(location[1], int):
        item = _value_at(data, location[:2])
        ident = item.get("id") if isinstance(item, Mapping) else None
        label = f"{location[0]}[{location[1]}]"
        if isinstance(ident, str):
            label += f" (id {ident[:60]!r})"
        return label, list(location[2:])
    return "", list(location)


def _describe_problem(name: str, root: Node, data: object, problem: Any) -> str:
    # pydantic appends validator names (e.g. "function-plain[...]") to locations; they are not
    # YAML keys, so the walk simply stops at the deepest real key.
    location = [step for step in problem["loc"] if isinstance(step, int | str)]
    line = _line(_node_at(root, location))
    item, field = _describe_item(data, location)
    path = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in field)
    parts = [part for part in (item, f"field {path.lstrip('.')}" if path else "") if part]
    where = ", ".join(parts) or "top level"
    return f"{name}:{line}: {_inert(where)}: {_inert(str(problem['msg']))}"


def _inert(text: str, limit: int = 300) -> str:
    """Keys and messages quote the file: show its control characters escaped, keep it short."""
    shown = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _check_unique_ids(
    name: str, root: Node, data: object, key: str, error: type[Exception]
) -> None:
    items = _value_at(data, [key])
    if not isinstance(items, list):
        return
    first_index: dict[object, int] = {}
    for index, item in enumerate(items):
        ident = item.get("id") if isinstance(item, Mapping) else None
        if ident in first_index:
            line = _line(_node_at(root, [key, index, "id"]))
            raise error(
                f"{name}:{line}: {key}[{index}] (id {ident!r:.80}): the id is already used by "
                f"{key}[{first_index[ident]}]"
            )
        first_index[ident] = index

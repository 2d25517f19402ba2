"""Tests for workers.datafile: YAML data files fail fast with the file, line and problem."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from workers.datafile import DataFileError, load_data_file


class Item(BaseModel):
    """One entry of the test document."""

    model_config = ConfigDict(extra="forbid")

    id: str
    port: int = Field(ge=1, le=65535)
    note: str = ""


class Document(BaseModel):
    """A small schema shaped like the rules and providers files."""

    model_config = ConfigDict(extra="forbid")

    name: str = "test"
    items: list[Item]


class CustomError(Exception):
    """Stands in for a module's own error type (RulesError, ProviderError)."""


def write(tmp_path: Path, content: str | bytes, name: str = "data.yaml") -> Path:
    """Write a data file (dedenting text) and return its path."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    return path


def load_error(path: Path, *, unique: bool = False) -> str:
    """Load a file that must fail and return the message."""
    with pytest.raises(DataFileError) as failure:
        load_data_file(path, Document, unique_ids_in=("items",) if unique else ())
    return str(failure.value)


VALID = """\
name: lab
items:
  - id: telnet
    port: 23
  - id: ftp
    port: 21
    note: "<b>markup</b> stays data"
"""


def test_valid_file_loads(tmp_path: Path) -> None:
    """A valid file becomes the validated model."""
    document = load_data_file(write(tmp_path, VALID), Document, unique_ids_in=("items",))
    assert document.name == "lab"
    assert [(item.id, item.port) for item in document.items] == [("telnet", 23), ("ftp", 21)]
    assert document.items[1].note == "<b>markup</b> stays data"


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        ("items: [\n  {id: a, port: 1}\n", "3:1", "expected ',' or ']'"),
        ("items:\n  - id: a\n   port: 1\n", "3:4", "expected <block end>"),
        ("items:\n\t- id: a\n", "2:1", "found character '\\t' that cannot start any token"),
        ('name: "unterminated\nitems: []\n', "3:1", "found unexpected end of stream"),
        ("name: a\n---\nname: b\n", "2:1", "expected a single document in the stream"),
        ("name: !!python/object:os.system ls\n", "1:7", "could not determine a constructor"),
        ("key: @reserved\n", "1:6", "found character '@' that cannot start any token"),
    ],
    ids=["unclosed-flow", "bad-indent", "tab", "unterminated-quote", "two-documents", "tag", "at"],
)
def test_malformed_yaml_names_line_and_column(
    tmp_path: Path, content: str, where: str, problem: str
) -> None:
    """Broken YAML fails with file:line:column and the parser's complaint."""
    path = write(tmp_path, content)
    message = load_error(path)
    assert message.startswith(f"{path}:{where}: malformed YAML: "), message
    assert problem in message


@pytest.mark.parametrize(
    ("content", "line", "key"),
    [
        ("name: a\nname: b\nitems: []\n", 2, "name"),
        ("items:\n  - id: a\n    port: 1\n    port: 2\n", 4, "port"),
        ("items:\n  - {id: a, port: 1, id: b}\n", 2, "id"),
    ],
    ids=["top-level", "nested", "flow"],
)
def test_duplicate_keys_are_refused_with_line(
    tmp_path: Path, content: str, line: int, key: str
) -> None:
    """A key given twice in one mapping is an error at its second line, not a silent overwrite."""
    path = write(tmp_path, content)
    assert load_error(path) == f"{path}:{line}: key {key!r} appears twice in the same mapping"


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("base: &b {id: a, port: 1}\nitems: [*b]\n", 1),
        ("items:\n  - &one {id: a, port: 1}\n  - *one\n", 2),
        ("defaults: &d {port: 1}\nitems:\n  - <<: *d\n    id: a\n", 1),
    ],
    ids=["alias", "alias-in-list", "merge-key"],
)
def test_anchors_and_aliases_are_refused(tmp_path: Path, content: str, line: int) -> None:
    """Aliases (and merge keys built on them) are refused, naming the anchored node's line."""
    path = write(tmp_path, content)
    assert load_error(path) == f"{path}:{line}: anchors and aliases (& and *) are not supported"


def test_billion_laughs_is_refused_before_expansion(tmp_path: Path) -> None:
    """A document of nested aliases is refused at the first repeated node, never expanded."""
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        previous = chr(ord("a") + level - 1)
        current = chr(ord("a") + level)
        levels.append(f"{current}: &{current} [" + ", ".join([f"*{previous}"] * 10) + "]")
    path = write(tmp_path, "\n".join(levels) + "\nitems: []\n")
    assert "anchors and aliases" in load_error(path)


@pytest.mark.parametrize(
    ("content", "where", "code"),
    [
        ("items: []\nname: \x1b[31mred\n", "2:7", "001b"),
        ("\x00", "1:1", "0000"),
        ("items:\n  - id: a\x08\n    port: 1\n", "2:10", "0008"),
        ("name: ok\n\x7f\n", "2:1", "007f"),
    ],
    ids=["escape", "nul", "backspace", "delete"],
)
def test_control_characters_are_refused_with_line_and_column(
    tmp_path: Path, content: str, where: str, code: str
) -> None:
    """A raw control character anywhere fails as malformed YAML at its line and column."""
    path = write(tmp_path, content)
    assert load_error(path) == (
        f"{path}:{where}: malformed YAML: control character #x{code} is not allowed"
    )


def test_too_large_file_is_refused(tmp_path: Path) -> None:
    """A file over the size limit is refused without being parsed."""
    path = write(tmp_path, b"items: []\n" + b"# padding\n" * 100_001)
    assert load_error(path) == f"{path}: the file is larger than 1000000 bytes"


@pytest.mark.parametrize(
    ("content", "offset"),
    [
        (b"items:\n  - id: caf\xe9\n    port: 1\n", 18),
        (b"\xff\xfeitems: []\n", 0),
        (b"items: []\n# \xc3\x28\n", 12),
    ],
    ids=["latin-1", "utf-16-bom", "bad-continuation"],
)
def test_non_utf8_file_is_refused(tmp_path: Path, content: bytes, offset: int) -> None:
    """Bytes that are not UTF-8 fail with the offset of the first bad byte."""
    path = write(tmp_path, content)
    assert load_error(path) == f"{path}: not UTF-8 text (byte {offset})"


@pytest.mark.parametrize(
    "content", ["", "\n\n", "# only a comment\n", "---\n", "null\n", "~\n", "--- \n...\n"]
)
def test_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    """A file with no document in it is refused as empty."""
    path = write(tmp_path, content)
    assert load_error(path) == f"{path}: the file is empty"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A file that cannot be read names itself and the reason."""
    path = tmp_path / "nope.yaml"
    assert load_error(path) == f"{path}: cannot read the file: No such file or directory"
    assert load_error(tmp_path).startswith(f"{tmp_path}: cannot read the file: ")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            """\
            items:
              - id: telnet
                port: 23
              - id: ftp
                port: 70000
            """,
            ["5: items[1] (id 'ftp'), field port: Input should be less than or equal to 65535"],
        ),
        (
            """\
            items:
              - id: telnet
                port: 23
                nmap_args: -A
            """,
            ["4: items[0] (id 'telnet'), field nmap_args: Extra inputs are not permitted"],
        ),
        (
            """\
            items:
              - port: 23
            """,
            ["2: items[0], field id: Field required"],
        ),
        (
            """\
            - id: telnet
              port: 23
            """,
            ["1: top level: Input should be a valid dictionary or instance of Document"],
        ),
        (
            """\
            name: [not, a, string]
            items: not-a-list
            extra: 1
            """,
            [
                "1: field name: Input should be a valid string",
                "2: field items: Input should be a valid list",
                "3: field extra: Extra inputs are not permitted",
            ],
        ),
        (
            """\
            items:
              - id: a
                port: "twenty-three"
              - id: b
                port: 0
            """,
            [
                "3: items[0] (id 'a'), field port: Input should be a valid integer, "
                "unable to parse string as an integer",
                "5: items[1] (id 'b'), field port: Input should be greater than or equal to 1",
            ],
        ),
    ],
    ids=["range", "unknown-key", "missing", "wrong-top-level", "three-problems", "two-items"],
)
def test_validation_errors_name_each_line(
    tmp_path: Path, content: str, expected: list[str]
) -> None:
    """Every schema problem is listed, one per line, with its line, item and field."""
    path = write(tmp_path, content)
    assert load_error(path).splitlines() == [f"{path}:{line}" for line in expected]


def test_duplicate_ids_are_refused_with_the_line(tmp_path: Path) -> None:
    """A repeated id names the second occurrence's line and the first one's index."""
    path = write(
        tmp_path,
        """\
        items:
          - id: ftp
            port: 21
          - id: telnet
            port: 23
          - id: ftp
            port: 2121
        """,
    )
    assert load_error(path, unique=True) == (
        f"{path}:6: items[2] (id 'ftp'): the id is already used by items[0]"
    )
    assert load_data_file(path, Document).items[2].port == 2121


def test_custom_error_type_is_raised(tmp_path: Path) -> None:
    """Callers choose the exception type their module documents."""
    path = write(tmp_path, "items: [\n")
    with pytest.raises(CustomError, match="malformed YAML"):
        load_data_file(path, Document, error=CustomError)


@pytest.mark.parametrize(
    "content",
    [
        'items:\n  - id: a\n    port: 1\n    "\\e[31m\\0evil": 1\n',
        'items:\n  - id: a\n    port: 1\n    "' + "k" * 100_000 + '": 1\n',
        'items:\n  - id: "\\e[2J\\u202e"\n    port: 99999\n',
        "items:\n  - id: " + "i" * 100_000 + "\n    port: 99999\n",
        'items:\n  - id: a\n    port: 1\n"\\e]0;title\\a": 1\n"\\e]0;title\\a": 2\n',
        'items:\n  - id: "\\e[31m"\n    port: 1\n  - id: "\\e[31m"\n    port: 2\n',
    ],
    ids=["escape-key", "huge-key", "escape-id", "huge-id", "escape-duplicate", "escape-dup-id"],
)
def test_hostile_keys_and_values_give_short_inert_messages(tmp_path: Path, content: str) -> None:
    """Control characters and huge strings in a file never reach the message raw or unbounded."""
    path = write(tmp_path, content)
    message = load_error(path, unique=True)
    for line in message.splitlines():
        assert line.isprintable(), line
        assert len(line) < len(str(path)) + 400


@given(st.text(max_size=200))
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_text_loads_or_fails_with_data_file_error(tmp_path: Path, text: str) -> None:
    """Whatever a file holds, loading gives a document or a DataFileError that names the file."""
    path = write(tmp_path, text.encode("utf-8", "surrogatepass"))
    message = ""
    try:
        load_data_file(path, Document, unique_ids_in=("items",))
    except DataFileError as failure:
        message = str(failure)
    assert not message or re.match(re.escape(str(path)) + r"(:\d+)*: ", message)

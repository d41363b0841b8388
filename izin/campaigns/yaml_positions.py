"""Load YAML safely into plain Python data and remember where every node came from.

Campaign files are written by people, so every later error must point back to a line and column.
``load_yaml`` composes the document with a ``yaml.SafeLoader``-based composer (nothing is ever
constructed from a tag) and then builds plain ``dict``/``list``/scalar data itself, recording for
every node its 1-based ``(line, column)`` keyed by the path tuple that reaches it, e.g.
``("trigger", "send_time")`` or ``("audience", "all", 0, "attribute")``. Mapping keys get their own
map, so "unknown key" errors can point at the key rather than at its value.

What is refused (every refusal is a ``YamlIssue`` with a position):

- files over ``MAX_BYTES``, text that is not UTF-8, malformed YAML (PyYAML's own position);
- nesting deeper than ``MAX_DEPTH`` (checked while composing, before Python's stack is at risk);
- tags other than the standard scalar, sequence and mapping ones (``!!python/object``, ``!foo``,
  ``!!set``, ``!!binary``, merge keys ``<<``);
- duplicate keys in a mapping (reported at the second one);
- alias expansion beyond ``MAX_NODES`` values in total (the "billion laughs" bomb) and aliases
  that contain themselves. Plain, small alias use is allowed.

Scalars follow YAML 1.2 where YAML 1.1 surprises people: ``10:00`` is the text "10:00" (not the
sexagesimal number 600), only ``true``/``false`` are booleans (``yes``, ``no``, ``on``, ``off``
stay text, so ``in: [NO, SE]`` means Norway and Sweden), and timestamps stay text so the caller
decides how to parse them. Tag, merge-key and duplicate-key problems are all reported together;
a broken limit (size, depth, expansion) or a syntax error stops loading at once, as it must.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "LoadedYaml",
    "Path",
    "Position",
    "YamlIssue",
    "YamlLoadError",
    "load_yaml",
]

#: Largest accepted file, in bytes (1 MiB); a campaign file is a few kilobytes.
MAX_BYTES = 1024 * 1024
#: Deepest accepted nesting of mappings and sequences, in levels.
MAX_DEPTH = 50
#: Most values (scalars, mappings, sequences, counted after alias expansion) one document may hold.
MAX_NODES = 10_000

Path = tuple[str | int, ...]
Position = tuple[int, int]  # (line, column), both 1-based

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML}{name}" for name in ("str", "null", "bool", "int", "float", "timestamp")}
_SEQ_TAG = f"{_YAML}seq"
_MAP_TAG = f"{_YAML}map"
_MERGE_TAG = f"{_YAML}merge"
_SAFE = SafeConstructor()
# YAML 1.1 sexagesimal numbers (10:00 == 600) are the classic send_time trap; YAML 1.2 dropped them.
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$")


@dataclass(frozen=True)
class YamlIssue:
    """One reason the document was refused, with its 1-based position and the path that leads there."""

    line: int
    column: int
    path: Path
    message: str


class YamlLoadError(ValueError):
    """The document could not be loaded; ``issues`` lists every reason found."""

    def __init__(self, issues: list[YamlIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(f"{i.line}:{i.column}: {i.message}" for i in issues))


@dataclass
class LoadedYaml:
    """Plain data plus where each value (``positions``) and each mapping key (``key_positions``) is."""

    data: Any
    positions: dict[Path, Position] = field(default_factory=dict)
    key_positions: dict[Path, Position] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Position:
        """Position of ``path`` (its key when ``key``), else of its nearest existing ancestor."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        probe = tuple(path)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), (1, 1))


class _Refused(Exception):
    """Abort loading at once (depth, expansion or recursion limits): nothing sensible follows."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _AliasNode(Node):
    """Where an alias was written; ``target`` is the anchored node it stands for."""

    id = "alias"

    def __init__(self, target: Node, anchor: str, start_mark: yaml.Mark) -> None:
        super().__init__(target.tag, target.value, start_mark, start_mark)
        self.target = target
        self.anchor = anchor


class _PositionLoader(yaml.SafeLoader):
    """SafeLoader whose composer caps nesting depth and node count and keeps the position of every alias use."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        # counted while composing, so a huge flat document stops before its node graph fills memory
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = super().compose_node(parent, index)
            return _AliasNode(target, event.anchor, event.start_mark)
        self._depth += 1
        self._nodes += 1
        try:
            if self._nodes > MAX_NODES:
                raise _Refused(
                    self.peek_event().start_mark,
                    f"more than {MAX_NODES} values in one file; a campaign file is far smaller",
                )
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    self.peek_event().start_mark,
                    f"nesting deeper than {MAX_DEPTH} levels; a campaign file is shallow, "
                    "check for unclosed brackets or runaway indentation",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _pos(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


class _Builder:
    """Turns a composed node graph into plain data, recording positions and collecting issues."""

    def __init__(self) -> None:
        self.loaded = LoadedYaml(data=None)
        self.issues: list[YamlIssue] = []
        self._count = 0
        self._active: set[int] = set()  # ids of nodes being built: an alias to one of them is a cycle
        self._outer_alias: _AliasNode | None = None  # blamed when expansion runs away

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            if self._outer_alias is not None:
                raise _Refused(
                    self._outer_alias.start_mark,
                    f"alias *{self._outer_alias.anchor} expands the document beyond {MAX_NODES} "
                    "values; write the content out instead of nesting aliases",
                )
            raise _Refused(
                node.start_mark,
                f"more than {MAX_NODES} values in one file; a campaign file is far smaller",
            )
        if depth > MAX_DEPTH:
            raise _Refused(node.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
        self.loaded.positions[path] = _pos(node.start_mark)
        if isinstance(node, _AliasNode):
            return self._build_alias(node, path, depth)
        if node.tag == _MERGE_TAG:
            self._issue(node, path, "merge keys (<<) are not supported; write the keys out")
            return None
        if isinstance(node, ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                return self._bad_tag(node, path)
            return _scalar(node)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ_TAG:
                return self._bad_tag(node, path)
            self._active.add(id(node))
            try:
                return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
            finally:
                self._active.discard(id(node))
        if isinstance(node, MappingNode):
            if node.tag != _MAP_TAG:
                return self._bad_tag(node, path)
            self._active.add(id(node))
            try:
                return self._build_mapping(node, path, depth)
            finally:
                self._active.discard(id(node))
        raise AssertionError(f"unexpected node {node!r}")  # the composer makes only the three kinds

    def _build_alias(self, node: _AliasNode, path: Path, depth: int) -> Any:
        if id(node.target) in self._active:
            raise _Refused(
                node.start_mark,
                f"alias *{node.anchor} refers to a node that contains it; remove the alias",
            )
        outer = self._outer_alias
        if outer is None:
            self._outer_alias = node
        try:
            self._count -= 1  # the alias itself is not a value; its target is counted instead
            value = self.build(node.target, path, depth)
        finally:
            self._outer_alias = outer
        # The value is the anchor's, but errors about it belong where the alias was written.
        self.loaded.positions[path] = _pos(node.start_mark)
        return value

    def _build_mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, _AliasNode):
                key_node = key_node.target
            if key_node.tag == _MERGE_TAG:
                self._issue(key_node, path, "merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, ScalarNode):
                self._issue(key_node, path, "a key must be plain text, not a list or a mapping")
                continue
            if key_node.tag not in _SCALAR_TAGS:
                self._bad_tag(key_node, path)
                continue
            # Keys stay as written: every key in a campaign file is a name, never a number.
            key = key_node.value
            if key in seen:
                line, _ = seen[key]
                self._issue(
                    key_node,
                    path + (key,),
                    f"duplicate key '{key}' (first defined on line {line}); keep only one",
                )
                continue
            seen[key] = _pos(key_node.start_mark)
            self.loaded.key_positions[path + (key,)] = _pos(key_node.start_mark)
            result[key] = self.build(value_node, path + (key,), depth + 1)
        return result

    def _bad_tag(self, node: Node, path: Path) -> None:
        self._issue(
            node,
            path,
            f"tag '{_short_tag(node.tag)}' is not allowed; use plain text, numbers, true/false, "
            "lists and mappings",
        )
        return None

    def _issue(self, node: Node, path: Path, message: str) -> None:
        line, column = _pos(node.start_mark)
        self.issues.append(YamlIssue(line, column, path, message))


def _scalar(node: ScalarNode) -> Any:
    tag, text = node.tag, node.value
    if tag == f"{_YAML}null":
        return None
    if tag == f"{_YAML}bool":
        lowered = text.lower()
        return lowered == "true" if lowered in ("true", "false") else text
    if tag in (f"{_YAML}int", f"{_YAML}float"):
        if _SEXAGESIMAL.match(text):
            return text
        if tag == f"{_YAML}int":
            return _SAFE.construct_yaml_int(node)
        return _SAFE.construct_yaml_float(node)
    return text  # str, and timestamps kept as written


def _line_col(text: str, index: int) -> Position:
    before = text[:index]
    return (before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def _syntax_issue(error: yaml.YAMLError, text: str) -> YamlIssue:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        line, column = _pos(error.problem_mark)
        context = error.context
        if context and error.context_mark is not None \
                and error.context_mark.line != error.problem_mark.line:
            context += f" (from line {error.context_mark.line + 1})"
        parts = [p for p in (context, error.problem) if p]
        return YamlIssue(
            line, column, (), f"invalid YAML: {', '.join(parts)}; check indentation and quoting"
        )
    if isinstance(error, yaml.reader.ReaderError):
        line, column = _line_col(text, error.position)
        character = error.character
        code = character if isinstance(character, int) else ord(character)
        return YamlIssue(
            line, column, (),
            f"invalid YAML: control character U+{code:04X} is not allowed; remove it",
        )
    return YamlIssue(1, 1, (), f"invalid YAML: {error}")


def load_yaml(source: str | bytes) -> LoadedYaml:
    """Parse one YAML document into plain data with positions; raise ``YamlLoadError`` if refused."""
    raw = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    if len(raw) > MAX_BYTES:
        raise YamlLoadError(
            [YamlIssue(1, 1, (), f"file is larger than {MAX_BYTES} bytes (1 MiB); a campaign file "
                       "is a few kilobytes")]
        )
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = source[: error.start].count(b"\n") + 1
            column = error.start - (source.rfind(b"\n", 0, error.start) + 1) + 1
            raise YamlLoadError(
                [YamlIssue(line, column, (), "file is not UTF-8 text; save it as UTF-8")]
            ) from None
    else:
        text = source

    builder = _Builder()
    loader: _PositionLoader | None = None
    try:
        loader = _PositionLoader(text)
        root = loader.get_single_node()
        if root is None:
            builder.loaded.positions[()] = (1, 1)
            return builder.loaded
        builder.loaded.data = builder.build(root, (), 0)
    except _Refused as refused:
        line, column = _pos(refused.mark)
        raise YamlLoadError([YamlIssue(line, column, (), refused.message)]) from None
    except yaml.YAMLError as error:
        raise YamlLoadError([_syntax_issue(error, text)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if builder.issues:
        raise YamlLoadError(sorted(builder.issues, key=lambda i: (i.line, i.column, i.message)))
    return builder.loaded

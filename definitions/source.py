"""YAML text to plain data plus the source position of every node, so errors can name file:line:col."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from definitions.diagnostics import DefinitionError, Diagnostic

PathKey = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Positions (1-based line, col) of every mapping key / sequence item, keyed by its path in the data."""

    file: str
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Sequence[str | int]) -> tuple[int, int]:
        """The position of the deepest node of ``path`` that exists in the file."""
        key: PathKey = tuple(path)
        while key:
            if key in self.positions:
                return self.positions[key]
            key = key[:-1]
        return self.positions.get((), (1, 1))

    def diagnostic(self, path: Sequence[str | int], message: str) -> Diagnostic:
        line, col = self.locate(path)
        return Diagnostic(self.file, line, col, render_path(path), message)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def render_path(path: Sequence[object]) -> str:
    """``define.x.all[0]``; a key that is not a plain word (spaces, newlines, a number) is shown quoted."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)[:40]!r}]"
    return out


# Limits on what a definition file may expand to: the YAML composer, the models, the checks and the compiler
# all recurse over the document, and aliases can make a small text expand to an enormous one.
MAX_DEPTH = 64  # nesting levels (the shipped measures use at most 16)
MAX_NODES = 200_000  # nodes after alias expansion (the largest shipped measure has about 1,000)


def _diagnostic(file: str, mark: yaml.Mark | None, path: PathKey, message: str) -> Diagnostic:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Diagnostic(file, line, col, render_path(path), message)


def _short(exc: BaseException) -> str:
    """The first line of an exception's message (a YAML error's ``problem``), at most 120 characters."""
    lines = str(getattr(exc, "problem", None) or exc).splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Builder:
    """Plain data from a composed node graph, refusing recursive aliases and alias bombs."""

    def __init__(self, smap: SourceMap) -> None:
        self.smap = smap
        self.nodes = 0
        self.open: set[int] = set()  # collection nodes being built (an alias to one of them is a loop)

    def fail(self, node: yaml.Node, path: PathKey, message: str) -> DefinitionError:
        return DefinitionError([_diagnostic(self.smap.file, node.start_mark, path, message)])

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        smap = self.smap
        smap.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))  # keys win
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, path, f"the document expands to too many nodes (more than {MAX_NODES:,})")
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.construct(node, path)
        if node.tag not in _PLAIN_TAGS:  # !!python/..., !!set, !!omap, !custom: meaningless in a definition
            raise self.fail(node, path, f"YAML tag {node.tag[:60]!r} is not supported here")
        if id(node) in self.open:
            raise self.fail(node, path, "an alias refers to itself (a recursive anchor)")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.fail(key_node, path, "a key must be a plain scalar, not a list or mapping")
                key = self.construct(key_node, path)
                try:
                    hash(key)
                except TypeError:
                    raise self.fail(key_node, path, "a key must be a plain scalar") from None
                if key in out:
                    raise self.fail(key_node, (*path, key), f"duplicate key {key!r}")
                smap.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, (*path, key))
            return out
        finally:
            self.open.discard(id(node))

    def construct(self, node: yaml.Node, path: PathKey) -> Any:
        """A scalar as YAML 1.1 reads it; a value it cannot construct (2025-02-30, a 5,000-digit integer, an
        unknown or python tag) is a positioned error, not a crash."""
        try:
            return _construct(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise self.fail(node, path, f"cannot read this value: {_short(exc)}") from None


def _build(node: yaml.Node, path: PathKey, smap: SourceMap) -> Any:
    return _Builder(smap).build(node, path)


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


class _DepthLimitedLoader(yaml.SafeLoader):
    """The safe loader's composer, refusing nesting deeper than MAX_DEPTH (it recurses once per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.too_deep: yaml.Mark | None = None

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                self.too_deep = event.start_mark
                raise yaml.YAMLError("too deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; a syntax error becomes a DefinitionError at its position."""
    smap = SourceMap(file)
    loader: _DepthLimitedLoader | None = None
    try:
        loader = _DepthLimitedLoader(text)  # checks every character first (ReaderError)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise DefinitionError(
            [Diagnostic(file, line, col, "", f"YAML syntax: {exc.problem or exc}")]
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line, col = _position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise DefinitionError(
            [Diagnostic(file, line, col, "", f"YAML syntax: character #x{code:04x} is not allowed")]
        ) from None
    except yaml.YAMLError as exc:
        if loader is None or loader.too_deep is None:
            raise DefinitionError([Diagnostic(file, 1, 1, "", f"YAML syntax: {_short(exc)}")]) from None
        raise DefinitionError(
            [_diagnostic(file, loader.too_deep, (), f"nested deeper than {MAX_DEPTH} levels")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise DefinitionError([Diagnostic(file, 1, 1, "", "empty document")])
    return _build(node, (), smap), smap


def read_yaml(path: Path) -> tuple[Any, SourceMap]:
    """Read and parse a definition file; an unreadable or non-UTF-8 file is a DefinitionError too."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DefinitionError(
            [Diagnostic(file, 1, 1, "", f"cannot read the file ({exc.strerror or exc})")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DefinitionError(
            [Diagnostic(file, line, col, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})")]
        ) from None
    return parse_yaml(text, file)

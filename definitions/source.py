"""YAML text to plain data plus the source position of every node, so errors can name file:line:col."""

from __future__ import annotations

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


def render_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _build(node: yaml.Node, path: PathKey, smap: SourceMap) -> Any:
    smap.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))  # keys win
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node)
            if key in out:
                raise DefinitionError(
                    [
                        Diagnostic(
                            smap.file,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            render_path((*path, key)),
                            f"duplicate key {key!r}",
                        )
                    ]
                )
            smap.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, (*path, key), smap)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), smap) for i, item in enumerate(node.value)]
    return _construct(node)


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; a syntax error becomes a DefinitionError at its position."""
    smap = SourceMap(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise DefinitionError(
            [Diagnostic(file, line, col, "", f"YAML syntax: {exc.problem or exc}")]
        ) from None
    if node is None:
        raise DefinitionError([Diagnostic(file, 1, 1, "", "empty document")])
    return _build(node, (), smap), smap


def read_yaml(path: Path) -> tuple[Any, SourceMap]:
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))

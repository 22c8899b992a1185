"""A measure together with the libraries it includes, and the name resolution both share.

Names are scoped: inside a measure, ``x`` is the measure's own definition and ``hospice.x`` a library's;
inside a library, unqualified names are that library's own. A ``valueset`` may also be written as a URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from definitions.diagnostics import Diagnostic
from definitions.model import Definition, Library, Measure, StatusRule
from definitions.source import SourceMap

MEASURE_SCOPE = ""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "urn:"))


@dataclass(frozen=True)
class Resolved:
    """A name found: the scope it lives in, its definition, and the path of that definition in its file."""

    scope: str
    name: str
    value: Any
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class ResolvedMeasure:
    measure: Measure
    libraries: Mapping[str, Library] = field(default_factory=dict)
    source: SourceMap | None = None
    library_sources: Mapping[str, SourceMap] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.measure.id

    def _unit(self, scope: str) -> Measure | Library:
        return self.measure if scope == MEASURE_SCOPE else self.libraries[scope]

    def _split(self, name: str, scope: str) -> tuple[str, str]:
        if "." in name:
            lib, local = name.split(".", 1)
            return lib, local
        return scope, name

    def _visible(self, scope: str, target: str) -> bool:
        if scope == target:
            return True
        return target in self._unit(scope).include

    def define(self, name: str, scope: str) -> Resolved | None:
        target, local = self._split(name, scope)
        if target not in ("", *self.libraries) or not self._visible(scope, target):
            return None
        unit = self._unit(target)
        if local not in unit.define:
            return None
        return Resolved(target, local, unit.define[local], ("define", local))

    def valueset(self, name: str, scope: str) -> Resolved | None:
        if is_url(name):
            return Resolved(scope, name, name, ())
        target, local = self._split(name, scope)
        if target not in ("", *self.libraries) or not self._visible(scope, target):
            return None
        unit = self._unit(target)
        if local not in unit.valuesets:
            return None
        return Resolved(target, local, unit.valuesets[local], ("valuesets", local))

    def status_rule(self, name: str, scope: str) -> Resolved | None:
        target, local = self._split(name, scope)
        if target not in ("", *self.libraries) or not self._visible(scope, target):
            return None
        rule: StatusRule | None = self._unit(target).status_rules.get(local)
        return None if rule is None else Resolved(target, local, rule, ("status_rules", local))

    def diagnostic(self, scope: str, path: tuple[str | int, ...], message: str) -> Diagnostic:
        smap = self.source if scope == MEASURE_SCOPE else self.library_sources.get(scope)
        if smap is None:
            return Diagnostic(f"<{scope or self.measure.id}>", 1, 1, ".".join(map(str, path)), message)
        if path[:2] == ("groups", 0) and ("groups",) not in smap.positions:
            path = path[2:]
        return smap.diagnostic(path, message)

    def units(self) -> Iterator[tuple[str, Measure | Library]]:
        yield MEASURE_SCOPE, self.measure
        yield from self.libraries.items()

    def valueset_urls(self) -> list[str]:
        """Every value-set URL the measure and its libraries declare (the terminology it needs)."""
        return sorted({url for _, unit in self.units() for url in unit.valuesets.values()})

    @property
    def content_hash(self) -> str:
        """A hash of the measure and its libraries as validated (not of the file bytes: comments don't count)."""
        payload = {
            "measure": _dump(self.measure),
            "libraries": {k: _dump(v) for k, v in sorted(self.libraries.items())},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def definition_kind(value: Definition) -> str:
    """``events`` for an event-set definition, ``condition`` for a boolean one."""
    from definitions.model import EventRef, Retrieve, Union_

    return "events" if isinstance(value, (Retrieve, Union_, EventRef)) else "condition"

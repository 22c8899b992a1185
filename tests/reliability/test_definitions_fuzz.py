"""Hostile measure YAML: the loader either succeeds or raises ``DefinitionError`` naming ``file:line:col``.

The inputs are mutations of the shipped measures and libraries (measures/*.yaml, measures/lib/*.yaml): keys
deleted, renamed or duplicated, values replaced by random scalars/lists/maps, text truncated, tabs and odd
unicode inserted, deep nesting, huge numbers, impossible dates, bad durations, unknown value sets, cycles
between definitions, includes of missing (or escaping) files, recursive anchors and alias bombs. A loaded
measure is compiled as well (``engine.compile``), as ``engine.library.load_library`` does: a compile problem
must be a ``CompileError`` (a ``DefinitionError``) too.

Bounded: ~200 generated cases in all (derandomized, so every run tries the same ones), plus one fixed case
per protection in ``definitions/`` (``test_each_protection``), each of which fails when that protection is
removed.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import measures
from definitions import DefinitionError, load_measure
from definitions.loader import load_library
from definitions.source import parse_yaml
from engine.compile import compile_measure
from engine.library import load_valuesets

# A fixed selection (measures being added to the library elsewhere, possibly half-done, do not change this test)
SHIPPED = {"cms2", "cms22", "cms69", "cms117", "cms122", "cms124", "cms125", "cms128", "cms130", "cms138",
           "cms146", "cms159", "cms165", "cms871", "cms986"}  # fmt: skip
MEASURE_FILES = [p for p in measures.measure_files() if p.stem in SHIPPED]
LIB_FILES = measures.library_files()
TEXT = {p: p.read_text(encoding="utf-8") for p in [*MEASURE_FILES, *LIB_FILES]}
# a measure that includes each library, to load a mutated copy of that library through it
INCLUDER = {
    lib.stem: next(m for m in MEASURE_FILES if lib.stem in (yaml.safe_load(TEXT[m]).get("include") or []))
    for lib in LIB_FILES
    if any(lib.stem in (yaml.safe_load(TEXT[m]).get("include") or []) for m in MEASURE_FILES)
}
POSITIONED = re.compile(r"^(?P<file>.+\.yaml):(?P<line>\d+):(?P<col>\d+): .+")


def bounded(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


TRIED: dict[str, int] = {"loaded": 0, "refused": 0, "compile_refused": 0}


# ------------------------------------------------------------------------------------------------ strategies

ODD = ["\t", "\u00a0", "\u200b", "\ufeff", "\u2028", "\u202e", "\x00", "\x85", "\x1b", "\r", "é", "\U0001d518",
       "\\", '"', "'", ":", "- ", "&", "*", "!", "%", "@", "`", "{", "}", "[", "]", "#", "|", ">", "? ",
       "\n  "]  # fmt: skip
KNOWN_KEYS = ["all", "any", "not", "ref", "exists", "count", "age", "from", "events", "union", "where", "attr",
              "valueset", "timing", "window", "start", "end", "offset", "groups", "populations", "define",
              "include", "period", "scoring", "status", "with", "without", "pick", "covered_days"]  # fmt: skip
BAD_DURATIONS = ["-99999999999999999999 years", "99999999 days", "1 fortnight", "years", "1e3 days", "0x10 days",
                 "- 2 years", "2 year 3 months", "", "  ", "-0 minutes", "9" * 30 + " minutes"]  # fmt: skip
BAD_DATES = ["2025-02-30", "2025-13-01", "0000-01-01", "9999-99-99", "2025-1-1", "10000-01-01", "2025-00-10",
             "1-01-01", "2025-12-31T25:00:00", "2025-06-31"]  # fmt: skip
BAD_INCLUDES: list[Any] = ["missing_lib", "../cms122", "", "a\x00b", "/etc/passwd", "lib/../hospice", "HOSPICE",
                           "hospice", "..", "x" * 300, 7, None, ["x"], {"a": 1}]  # fmt: skip
TAGS = ["!!python/object/apply:os.system ['true']", "!!binary '###'", "!foo bar", "!!set {a, b}", "!!omap [a: 1]",
        "!!timestamp 2025-02-30", "!!int nope", "!!float x", "!!bool 3"]  # fmt: skip
HUGE = [10**20, -(10**20), 2**63, 2**64 + 1, 10**300, 1e308, float("inf"), float("-inf"), float("nan"), -1, 0]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(HUGE)
    | st.floats()
    | st.dates()
    | st.text(max_size=12)
    | st.sampled_from(KNOWN_KEYS + BAD_DURATIONS + BAD_DATES)
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)


def _nodes(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, node) of a parsed document, depth first."""
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _nodes(value, (*path, i))


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return data


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


PLACEHOLDER = "@@NESTED@@"


@st.composite
def data_mutation(draw: st.DrawFn, data: Any) -> tuple[Any, str | None]:
    """One structural change; returns the new data and, for deep nesting, the flow text of the placeholder."""
    nodes = list(_nodes(data))
    inner = [(p, v) for p, v in nodes if p]
    keyed = [(p, v) for p, v in inner if isinstance(p[-1], str)]
    op = draw(
        st.sampled_from(
            ["delete", "replace", "rename", "nest", "huge", "duration", "valueset", "cycle", "include"]
        )
    )
    note(f"data op {op}")
    if op == "delete" and keyed:
        path, _ = draw(st.sampled_from(keyed))
        del _parent(data, path)[path[-1]]
    elif op == "replace" and inner:
        path, _ = draw(st.sampled_from(inner))
        data = _set(data, path, draw(values))
    elif op == "rename" and keyed:
        path, _ = draw(st.sampled_from(keyed))
        parent = _parent(data, path)
        new = draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=10) | st.integers() | st.none())
        items = [(new if k == path[-1] else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)
    elif op == "nest" and inner:
        path, _ = draw(st.sampled_from(inner))
        depth = draw(st.integers(20, 3000))
        shape = draw(st.sampled_from(["not", "all", "list", "map"]))
        opener, closer = {
            "not": ("{not: ", "}"),
            "all": ("{all: [", "]}"),
            "list": ("[", "]"),
            "map": ("{a: ", "}"),
        }[shape]
        note(f"nest {shape} x{depth} at {path}")
        return _set(data, path, PLACEHOLDER), opener * depth + "{ref: x}" + closer * depth
    elif op == "huge" and inner:
        path, _ = draw(st.sampled_from(inner))
        data = _set(data, path, draw(st.sampled_from(HUGE)))
    elif op == "duration":
        spots = [(p, v) for p, v in inner if p[-1] in ("offset", "within")]
        spots += [(p, v) for p, v in inner if isinstance(v, str) and re.search(r"\d+ (year|month|day)", v)]
        if spots:
            path, _ = draw(st.sampled_from(spots))
            data = _set(data, path, draw(st.sampled_from(BAD_DURATIONS)))
    elif op == "valueset":
        spots = [(p, v) for p, v in inner if p[-1] == "valueset"]
        if spots:
            path, _ = draw(st.sampled_from(spots))
            data = _set(
                data, path, draw(st.sampled_from(["no_such_vs", "hospice.nope", "nope.x", "x.y.z", ""]))
            )
    elif op == "cycle" and isinstance(data, dict) and isinstance(data.get("define"), dict) and data["define"]:
        names = sorted(data["define"], key=str)
        a = draw(st.sampled_from(names))
        b = draw(st.sampled_from(names))
        if draw(st.booleans()):
            data["define"][a] = {"all": [{"ref": b}, {"not": {"ref": a}}]}
            data["define"][b] = {"any": [{"ref": a}]}
        else:
            data["define"][a] = {"events": b, "where": []}
            data["define"][b] = {"union": [{"events": a}, {"events": a}]}
    elif op == "include" and isinstance(data, dict):
        data["include"] = draw(st.lists(st.sampled_from(BAD_INCLUDES), min_size=1, max_size=3))
    return data, None


def _anchor_bomb(levels: int) -> str:
    lines = ["bomb0: &b0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"bomb{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str | bytes:
    op = draw(
        st.sampled_from(
            ["truncate", "insert", "duplicate", "bytes", "deep", "date", "bigint", "anchor", "tag", "key"]
        )
    )
    note(f"text op {op}")
    at = draw(st.integers(0, len(text)))
    lines = text.splitlines(keepends=True)
    if op == "truncate":
        return text[:at]
    if op == "insert":
        return text[:at] + "".join(draw(st.lists(st.sampled_from(ODD), min_size=1, max_size=3))) + text[at:]
    if op == "duplicate":
        keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[A-Za-z_][\w.]*:", line)]
        if keyed:
            i = draw(st.sampled_from(keyed))
            return "".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
        return text
    if op == "bytes":
        raw = text.encode()
        bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
        return raw[:at] + bad + raw[at:]
    if op == "deep":
        n = draw(st.integers(50, 20_000))
        return text + f"\ndeep: {'[' * n}{']' * n}\n"
    if op == "date":
        found = list(re.finditer(r"\d{4}-\d{2}-\d{2}", text))
        if found:
            m = draw(st.sampled_from(found))
            return text[: m.start()] + draw(st.sampled_from(BAD_DATES)) + text[m.end() :]
        return text + f"\nperiod: {{start: {draw(st.sampled_from(BAD_DATES))}, end: 2025-12-31}}\n"
    if op == "bigint":
        found = list(re.finditer(r"(?<![\w.-])\d+(?![\w.-])", text))
        digits = "9" * draw(st.integers(20, 6000))
        if found:
            m = draw(st.sampled_from(found))
            return text[: m.start()] + digits + text[m.end() :]
        return text + f"\nx: {digits}\n"
    if op == "anchor":
        return text + draw(
            st.sampled_from(
                ["\nloop: &a [*a]\n", "\nloop: &a {b: *a}\n", "\nx: *undefined\n", _anchor_bomb(7)]
            )
        )
    if op == "tag":
        tag = draw(st.sampled_from(TAGS))
        values_at = [m.end() for m in re.finditer(r": ", text)]
        if values_at:
            pos = draw(st.sampled_from(values_at))
            end = text.find("\n", pos)
            return text[:pos] + tag + (text[end:] if end >= 0 else "")
        return text + f"\nx: {tag}\n"
    # complex, unhashable or odd keys
    key = draw(st.sampled_from(["? [a, b]\n: c", "? {a: 1}\n: c", "? !!set {a}\n: c", "1: x", "null: x",
                                "2025-01-01: x", "? |\n  block\n: c", "<<: {a: 1}", "<<: *nope"]))  # fmt: skip
    return text + "\n" + key + "\n"


@st.composite
def hostile(draw: st.DrawFn, files: list[Path]) -> tuple[Path, str | bytes]:
    """A shipped file and a hostile version of its text (or bytes)."""
    base = draw(st.sampled_from(files))
    text = TEXT[base]
    n_data = draw(st.integers(0, 2))
    n_text = draw(st.integers(0 if n_data else 1, 2))
    nested = None
    if n_data:
        data = copy.deepcopy(yaml.safe_load(text))
        for _ in range(n_data):
            data, flow = draw(data_mutation(data))
            nested = flow or nested
        try:
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)
        except (yaml.YAMLError, ValueError, TypeError):  # undumpable (e.g. key types): keep the original
            text = TEXT[base]
        if nested is not None:
            text = text.replace(repr(PLACEHOLDER) if repr(PLACEHOLDER) in text else PLACEHOLDER, nested)
    out: str | bytes = text
    for _ in range(n_text):
        if isinstance(out, bytes):
            break
        out = draw(text_mutation(out))
    return base, out


# ---------------------------------------------------------------------------------------------- the oracle


def assert_positioned(exc: DefinitionError, files: set[str]) -> None:
    """Every diagnostic names one of ``files`` with a 1-based line and column, on one line of the message."""
    assert exc.diagnostics, "a DefinitionError without diagnostics"
    lines = str(exc).splitlines()
    assert len(lines) == len(exc.diagnostics), "one line per problem"
    for d, line in zip(exc.diagnostics, lines, strict=True):
        assert line == str(d)
        m = POSITIONED.match(line)
        assert m is not None, f"not file:line:col: {line!r}"
        assert d.file in files and line.startswith(f"{d.file}:{d.line}:{d.col}: "), line
        assert d.line >= 1 and d.col >= 1, line
        assert len(line) < 2_000, "the message carries the input"


def load_and_compile(measure: Path, files: set[str], vs: Any) -> str:
    """``load_measure`` then ``compile_measure`` (what ``engine.library.load_library`` does)."""
    try:
        resolved = load_measure(measure)
    except DefinitionError as exc:
        assert_positioned(exc, files)
        TRIED["refused"] += 1
        return "refused"
    try:
        compile_measure(resolved, vs)
    except DefinitionError as exc:  # CompileError
        assert_positioned(exc, files)
        TRIED["compile_refused"] += 1
        return "compile-refused"
    TRIED["loaded"] += 1
    return "loaded"


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="defs-fuzz-") as tmp:
        yield Path(tmp)


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------------------------------- tests


@bounded(140)
@given(hostile(MEASURE_FILES))
def test_fuzzed_measures_load_or_raise_positioned_definition_errors(case: tuple[Path, str | bytes]) -> None:
    base, content = case
    with workdir() as tmp:
        path = tmp / base.name
        _write(path, content)
        libs = {str(p) for p in LIB_FILES}
        outcome = load_and_compile(path, {str(path), *libs}, _valuesets())
        note(outcome)


@bounded(60)
@given(hostile([lib for lib in LIB_FILES if lib.stem in INCLUDER]))
def test_fuzzed_libraries_load_or_raise_positioned_definition_errors(case: tuple[Path, str | bytes]) -> None:
    base, content = case
    with workdir() as tmp:
        lib = tmp / "lib" / base.name
        _write(lib, content)
        measure = tmp / INCLUDER[base.stem].name
        _write(measure, TEXT[INCLUDER[base.stem]])
        files = {str(lib), str(measure), *(str(p) for p in LIB_FILES)}
        outcome = load_and_compile(measure, files, _valuesets())
        note(outcome)
        try:  # the library on its own, as `measures validate` loads it
            load_library(lib)
        except DefinitionError as exc:
            assert_positioned(exc, {str(lib)})


_CACHE: dict[str, Any] = {}


def _valuesets() -> Any:  # a cached constant
    if "vs" not in _CACHE:
        _CACHE["vs"] = load_valuesets()
    return _CACHE["vs"]


# ----------------------------------------------------------------- one fixed case per protection in definitions/

CMS122 = TEXT[measures.LIBRARY_DIR / "cms122.yaml"]


def _replace_first(pattern: str, new: str) -> Callable[[str], str]:
    return lambda text: re.sub(pattern, lambda _: new, text, count=1, flags=re.M)


PROTECTIONS: dict[str, tuple[Callable[[str], str | bytes], str]] = {
    # source.py: the YAML reader's own errors (not MarkedYAMLError) have a position
    "nul-character": (lambda t: t.replace("title:", "title: \x00", 1), "YAML syntax"),
    "invalid-utf8": (lambda t: t.encode()[:200] + b"\xff\xfe" + t.encode()[200:], "not UTF-8"),
    # source.py: nesting limit (the YAML composer, the models and the compiler all recurse)
    "deep-nesting": (lambda t: t + "\ndeep: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    # source.py: a recursive alias and an alias bomb
    "recursive-alias": (lambda t: t + "\nloop: &a [*a]\n", "refers to itself"),
    "alias-bomb": (lambda t: t + _anchor_bomb(7), "too many nodes"),
    # source.py: values YAML itself cannot construct
    "impossible-date": (_replace_first(r"start: \d{4}-\d{2}-\d{2}", "start: 2025-02-30"), "cannot read"),
    "huge-int-literal": (lambda t: t + "\nx: " + "9" * 5000 + "\n", "cannot read"),
    "unknown-scalar-tag": (lambda t: t + "\nx: !foo bar\n", "cannot read this value"),
    "python-tag": (lambda t: t + "\nx: !!python/object/apply:os.system ['true']\n", "is not supported"),
    "unhashable-key": (lambda t: t + "\n? [a, b]\n: c\n", "a key must be"),
    # loader.py: include names are library names (no paths, no NUL)
    "include-nul": (_replace_first(r"^include: \[", 'include: ["a\\0b", '), "not a library name"),
    "include-traversal": (_replace_first(r"^include: \[", "include: ['../cms122', "), "not a library name"),
    # check.py: calendar arithmetic out of range
    "huge-offset": (
        _replace_first(
            r"right: period, precision: day\}",
            "right: {start: {ref: period.start, offset: 99999 years}, end: period.end}, precision: day}",
        ),
        "out of the calendar",
    ),
    "unbounded-offset": (
        _replace_first(
            r"right: period, precision: day\}",
            "right: {start: {ref: period.start, offset: 99999999 years}, end: period.end}, precision: day}",
        ),
        "offset: Input should be less than or equal to 100000",
    ),
}


@pytest.mark.parametrize("case", sorted(PROTECTIONS))
def test_each_protection(case: str, tmp_path: Path) -> None:
    change, message = PROTECTIONS[case]
    path = tmp_path / "cms122.yaml"
    content = change(CMS122)
    assert content != CMS122, "the change did not apply"
    _write(path, content)
    with pytest.raises(DefinitionError, match=message) as info:
        load_measure(path)
    assert_positioned(info.value, {str(path), *(str(p) for p in LIB_FILES)})


def test_engine_library_entry_point_raises_only_definition_errors(tmp_path: Path) -> None:
    """``engine.library.load_library`` (what the batch and the API call) on a hostile measure file."""
    from engine import library

    path = tmp_path / "cms122.yaml"
    _write(path, CMS122 + "\nloop: &a [*a]\n")
    with (
        mock.patch.object(library.measures, "measure_files", return_value=[path]),
        pytest.raises(DefinitionError, match=r"cms122\.yaml:\d+:\d+: .*refers to itself"),
    ):
        library.load_library()


def test_parse_yaml_never_raises_anything_else() -> None:
    for text in [
        "",
        "   ",
        "\x00",
        "a: [",
        "{",
        "a: *x",
        "- &a [*a]",
        "\ufeff\ufeff",
        "%YAML 9.9\n---\na: 1",
    ]:
        try:
            parse_yaml(text, "t.yaml")
        except DefinitionError as exc:
            assert_positioned(exc, {"t.yaml"})

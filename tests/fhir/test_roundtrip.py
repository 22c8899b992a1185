"""Canonical frames -> export Bundles -> flatten -> the same rows (hypothesis, small generated patients)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.fhir import flatten_bundles
from datasets.fhir.export import export_patient_bundles
from datasets.schema import conform

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"
_STEP = {1: "1y", 2: "1mo", 3: "1d", 5: "1m", 6: "1s"}


def _bounds(local: datetime, prec: int, tz: int | None) -> tuple[datetime, datetime]:
    """(low, high) in UTC of a local value at a precision, as the flattener computes them."""
    trunc = {
        1: local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0),
        2: local.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        3: local.replace(hour=0, minute=0, second=0, microsecond=0),
        5: local.replace(second=0, microsecond=0),
        6: local.replace(microsecond=0),
        7: local,
    }[prec]
    if prec == 7:
        high = trunc
    else:
        high = pl.select(pl.lit(trunc).dt.offset_by(_STEP[prec])).item() - timedelta(microseconds=1)
    shift = timedelta(minutes=tz or 0)
    return (trunc - shift).replace(tzinfo=UTC), (high - shift).replace(tzinfo=UTC)


times = st.tuples(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)),
    st.sampled_from([1, 2, 3, 5, 6, 7]),
    st.sampled_from([None, 0, -300, 330]),
).map(lambda t: (t[0], t[1], t[2] if t[1] > 3 else None))
codes = st.lists(
    st.tuples(st.sampled_from([SNOMED, LOINC]), st.from_regex(r"[0-9]{3,8}", fullmatch=True)),
    min_size=1,
    max_size=2,
).map(lambda cs: [{"system": s, "code": c, "display": None} for s, c in cs])


@st.composite
def patients(draw: st.DrawFn) -> dict[str, pl.DataFrame]:
    n = draw(st.integers(1, 3))
    pats, encs, conds, obss = [], [], [], []
    for i in range(n):
        pid = f"p{i}"
        b = draw(st.dates(date(1930, 1, 1), date(2020, 12, 31)))
        prec = draw(st.sampled_from([1, 2, 3]))
        b = {1: b.replace(month=1, day=1), 2: b.replace(day=1), 3: b}[prec]
        pats.append(
            {
                "patient_id": pid,
                "birth_date": b,
                "birth_date_prec": prec,
                "gender": draw(st.sampled_from(["male", "female", "other", "unknown"])),
                "race_omb": draw(st.sampled_from([None, ["2106-3"], ["2054-5", "2028-9"]])),
                "ethnicity_omb": draw(st.sampled_from([None, ["2186-5"]])),
                "source": "rt",
            }
        )
        for j in range(draw(st.integers(0, 2))):
            (s_local, s_prec, s_tz), (e_local, e_prec, e_tz) = draw(times), draw(times)
            tz = s_tz if s_tz is not None else e_tz  # one offset per row: the start's, else the end's
            start, _ = _bounds(s_local, s_prec, tz if s_prec > 3 else None)
            _, end = _bounds(e_local, e_prec, tz if e_prec > 3 else None)
            encs.append(
                {
                    "patient_id": pid,
                    "id": f"{pid}-e{j}",
                    "source": "rt",
                    "start": start,
                    "end": end,
                    "start_prec": s_prec,
                    "end_prec": e_prec,
                    "tz_offset_min": tz,
                    "status": draw(st.sampled_from(["finished", "in-progress"])),
                    "type": draw(codes),
                    "class_system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "class_code": "AMB",
                }
            )
        for j in range(draw(st.integers(0, 2))):
            local, prec, tz = draw(times)
            start, _ = _bounds(local, prec, tz)
            ended = draw(st.booleans())
            end = _bounds(local + timedelta(days=400), prec, tz)[1] if ended else None
            conds.append(
                {
                    "patient_id": pid,
                    "id": f"{pid}-c{j}",
                    "source": "rt",
                    "start": start,
                    "end": end,
                    "start_prec": prec,
                    "end_prec": prec if ended else None,
                    "tz_offset_min": tz,
                    "code": draw(codes),
                    "clinical_status": "resolved" if ended else "active",
                    "onset_type": "dateTime",
                    "abatement_type": "dateTime" if ended else None,
                }
            )
        for j in range(draw(st.integers(0, 2))):
            local, prec, tz = draw(times)
            start, end = _bounds(local, prec, tz)
            value = draw(st.one_of(st.none(), st.floats(0, 500, allow_nan=False).map(lambda v: round(v, 3))))
            obss.append(
                {
                    "patient_id": pid,
                    "id": f"{pid}-o{j}",
                    "source": "rt",
                    "start": start,
                    "end": end,
                    "start_prec": prec,
                    "end_prec": prec,
                    "tz_offset_min": tz,
                    "status": "final",
                    "code": draw(codes),
                    "effective_type": "dateTime",
                    "value_type": None if value is None else "Quantity",
                    "value_quantity": value,
                    "value_unit": None if value is None else "mm[Hg]",
                }
            )
    return {
        "patient": _frame("patient", pats),
        "encounter": _frame("encounter", encs),
        "condition": _frame("condition", conds),
        "observation": _frame("observation", obss),
    }


def _frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    from datasets.schema import TABLES

    schema = TABLES[table]
    cols = {k for r in rows for k in r} | {"bucket"}
    frame = pl.DataFrame(rows, schema={c: schema[c] for c in schema if c in cols and c != "bucket"})
    return conform(table, frame.with_columns(pl.lit(0, dtype=pl.UInt16).alias("bucket")))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patients())
def test_export_then_flatten_is_identity(tables: dict[str, pl.DataFrame]) -> None:
    bundles = [(b, "rt") for b in export_patient_bundles(tables)]
    back = flatten_bundles(bundles)
    assert back.rejected.height == 0
    for table, frame in tables.items():
        key = "patient_id" if table == "patient" else "id"
        got = back.tables[table].sort(key).with_columns(source=pl.lit("rt"))
        want = frame.sort(key)
        diff = [(c, got[c].to_list(), want[c].to_list()) for c in want.columns if not got[c].equals(want[c])]
        assert got.height == want.height and not diff, (table, diff)

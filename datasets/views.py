"""Views: tables derived from a lake table when read, never stored.

``encounter_location`` is one row per location stay of an encounter (``encounter.locations``), so that hospital
measures can retrieve stays by location type and relate them to their encounter like any event
(``link: reverse_encounter``). Its rows carry the stay's period as ``start``/``end``, the encounter's time-zone
offset, and an ``id`` of ``<encounter id>#<position>``, unique within the patient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from datasets.schema import CODES, PRIMARY_CODE, TABLES, UTC_INSTANT


@dataclass(frozen=True)
class View:
    base: str  # the lake table it is derived from
    base_columns: tuple[str, ...]  # what it reads of that table
    schema: pl.Schema
    primary_code: str  # the column a value-set retrieval matches
    build: Callable[[pl.LazyFrame], pl.LazyFrame]


def _encounter_locations(encounter: pl.LazyFrame) -> pl.LazyFrame:
    stays = (
        encounter.select("patient_id", "id", "tz_offset_min", "locations")
        .with_columns(pl.int_ranges(pl.col("locations").list.len()).alias("_ix"))
        .explode("locations", "_ix")
        .drop_nulls("locations")
    )
    loc = pl.col("locations").struct
    return stays.select(
        "patient_id",
        pl.concat_str(pl.col("id"), pl.lit("#"), pl.col("_ix").cast(pl.String)).alias("id"),
        pl.col("id").alias("encounter_id"),
        loc.field("location_id"),
        loc.field("status"),
        loc.field("start"),
        loc.field("end"),
        "tz_offset_min",
        loc.field("type"),
    )


VIEWS: dict[str, View] = {
    "encounter_location": View(
        base="encounter",
        base_columns=("patient_id", "id", "tz_offset_min", "locations"),
        schema=pl.Schema(
            {
                "patient_id": pl.String(),
                "id": pl.String(),
                "encounter_id": pl.String(),
                "location_id": pl.String(),
                "status": pl.String(),
                "start": UTC_INSTANT,
                "end": UTC_INSTANT,
                "tz_offset_min": pl.Int16(),
                "type": CODES,
            }
        ),
        primary_code="type",
        build=_encounter_locations,
    )
}


def columns_of(table: str) -> pl.Schema:
    """The columns of a lake table or a view (a ``KeyError`` for neither)."""
    if table in VIEWS:
        return VIEWS[table].schema
    return TABLES[table]


def frame(table: str, lake_frames: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """``table`` from frames already read from the lake: itself, or the view built from its base table's frame
    (which holds the view's ``base_columns``)."""
    view = VIEWS.get(table)
    if view is None:
        return lake_frames[table]
    return view.build(lake_frames[view.base].lazy()).collect()


def view_rows(name: str, base_rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """The view's rows from its base table's rows as plain dicts (the per-patient reference interpreter's
    data), written independently of the polars builder so that the two can be checked against each other."""
    if name != "encounter_location":
        raise KeyError(name)
    out: list[dict[str, object]] = []
    for encounter in base_rows:
        stays = encounter.get("locations") or []
        assert isinstance(stays, list)
        for ix, stay in enumerate(stays):
            if stay is None:
                continue
            out.append(
                {
                    "patient_id": encounter.get("patient_id"),
                    "id": f"{encounter.get('id')}#{ix}",
                    "encounter_id": encounter.get("id"),
                    "location_id": stay.get("location_id"),
                    "status": stay.get("status"),
                    "start": stay.get("start"),
                    "end": stay.get("end"),
                    "tz_offset_min": encounter.get("tz_offset_min"),
                    "type": stay.get("type"),
                }
            )
    return out


def primary_code_of(table: str) -> str:
    """The column a value-set retrieval of ``table`` (lake table or view) matches by default."""
    if table in VIEWS:
        return VIEWS[table].primary_code
    return PRIMARY_CODE[table]

"""Links from an encounter to the rows its lists name, by id (CQMCommon encounterDiagnosis(),
principalDiagnosis(), and the QI-Core encounter-procedure extension's principal procedure).

A link is data: which list column of the encounter holds the references, which field is the referenced id, and
which entries count. The compiler reads the columns it needs from here and the lowering builds one expression;
the reference interpreter restates the same rule per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class ListLink:
    this_table: str
    other_table: str
    list_column: str
    id_field: str
    rank_one: bool  # only the entry ranked 1
    use: str | None  # only entries with this use code (diagnosis role)

    def ids(self) -> pl.Expr:
        """The ids this row's list names (a list column)."""
        entry = pl.element().struct
        keep = entry.field(self.id_field).is_not_null()
        if self.rank_one:
            keep = keep & (entry.field("rank") == 1)
        if self.use is not None:
            keep = keep & (entry.field("use") == self.use)
        return pl.col(self.list_column).list.eval(pl.element().filter(keep).struct.field(self.id_field))


LIST_LINKS: dict[str, ListLink] = {
    "encounter_diagnosis": ListLink("encounter", "condition", "diagnoses", "condition_id", False, None),
    "principal_diagnosis": ListLink("encounter", "condition", "diagnoses", "condition_id", True, "billing"),
    "principal_procedure": ListLink("encounter", "procedure", "procedures", "procedure_id", True, None),
}

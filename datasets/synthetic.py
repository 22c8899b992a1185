"""A fast, deterministic generator of realistic synthetic patients, written straight into the lake layout.

Vectorized (numpy draws, polars assembly) and bucket by bucket: each bucket's patients are generated from a
random stream seeded by ``(seed, bucket)`` and written before the next bucket starts, so memory stays bounded
and the output does not depend on the number of worker processes. Who has what is data
(:mod:`datasets.synthetic_world`); codes come from the project's synthetic value sets
(:mod:`datasets.synthetic_codes`). Hard cases (partial dates, second codings, non-final statuses, negation,
offsets, duplicates) are injected at low rates. Each layer of the world (``world.LAYERS``) has its own random
stream; rows a rule lists on its anchor encounter (diagnoses, procedures, location stays) are nested into that
encounter's lists once every table's ids are known.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from datasets import synthetic_world as world
from datasets.hashing import bucket_of
from datasets.lake import FileEntry, LakeWriter, Manifest, write_bucket
from datasets.schema import CODING, PREC_DAY, PREC_FRACTION, PREC_MONTH, PREC_YEAR, conform
from datasets.synthetic_codes import Coding, load_valuesets

US_PER_DAY = 86_400_000_000
I64 = npt.NDArray[np.int64]
SNOMED = "http://snomed.info/sct"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SOP = "urn:oid:2.16.840.1.113883.3.221.5"
ID_PREFIX = {
    "encounter": "enc",
    "condition": "cond",
    "procedure": "proc",
    "observation": "obs",
    "medication_request": "medrx",
    "immunization": "imm",
    "coverage": "cov",
    "service_request": "sr",
    "medication_dispense": "meddisp",
    "medication_administration": "medadm",
}
PARTIAL_TABLES = frozenset({"condition", "procedure", "immunization"})
POINT_TABLES = frozenset(
    {
        "observation",
        "medication_request",
        "immunization",
        "service_request",
        "medication_dispense",
        "medication_administration",
    }
)
LOCATION = "encounter_location"  # a rule on the view: stays nested into encounter.locations, not a table


@dataclass(frozen=True)
class SynthConfig:
    n_patients: int
    n_buckets: int = 64
    seed: int = 0
    period_year: int = 2025
    source: str = "synthetic"
    processes: int = 1


class _Book:
    """Interned codings and strings: rows hold small integers, turned into columns with one gather each."""

    def __init__(self) -> None:
        self.valuesets = load_valuesets()
        self.codings: list[Coding] = []
        self._coding_ix: dict[Coding, int] = {}
        self.strings: list[str | None] = [None]
        self._string_ix: dict[str | None, int] = {None: 0}

    def coding(self, c: Coding) -> int:
        if c not in self._coding_ix:
            self._coding_ix[c] = len(self.codings)
            self.codings.append(c)
        return self._coding_ix[c]

    def string(self, s: str | None) -> int:
        if s not in self._string_ix:
            self._string_ix[s] = len(self.strings)
            self.strings.append(s)
        return self._string_ix[s]

    def vs(self, name: str) -> tuple[str, tuple[Coding, ...]]:
        try:
            found = self.valuesets[name]
        except KeyError:
            raise KeyError(f"world rule refers to unknown synthetic value set {name!r}") from None
        return found.url, found.codes

    def coding_series(self) -> pl.Series:
        rows = [{"system": s, "code": c, "display": d} for s, c, d in self.codings]
        return pl.Series("c", rows, dtype=CODING)

    def string_series(self) -> pl.Series:
        return pl.Series("s", self.strings, dtype=pl.String)


@dataclass(frozen=True)
class _CompiledRule:
    rule: world.Rule
    codes: npt.NDArray[np.int32]  # coding indexes the rule draws from
    alt: npt.NDArray[np.int32]  # per code: a coding of another system in the same value set, or -1
    statuses: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float64]
    reasons: npt.NDArray[np.int32]
    values: npt.NDArray[np.int32]
    valueset_url: int
    rcodes: npt.NDArray[np.int32]  # reasonCode codings (empty: none)
    profile: int  # string index of the declared profile (0: none)
    routes: npt.NDArray[np.int32]  # route codings (empty: none)


def _compile(book: _Book, rule: world.Rule) -> _CompiledRule:
    url: str
    codes: tuple[Coding, ...]
    if rule.kind == "bp":
        url, codes = "", (world.BP_PANEL,)
    elif rule.kind == "vaccine":
        url, codes = "", world.VACCINES
    elif rule.codes:
        url, codes = "", rule.codes
    else:
        url, codes = book.vs(rule.valueset)
    ix = np.array([book.coding(c) for c in codes], dtype=np.int32)
    alt = np.array([next((book.coding(o) for o in codes if o[0] != c[0]), -1) for c in codes], dtype=np.int32)
    status = rule.status or (("final" if rule.table == "observation" else "completed", 1.0),)
    if rule.table == "condition" and not rule.status:
        status = (("active", 1.0),)
    weights = np.array([w for _, w in status], dtype=np.float64)
    reasons = np.array([book.coding(c) for c in book.vs(rule.reason)[1]], dtype=np.int32)
    value_codes = book.vs(rule.value_valueset)[1] if rule.value_valueset else rule.value_codes
    values = np.array([book.coding(c) for c in value_codes], dtype=np.int32)
    rcodes = np.array(
        [book.coding(c) for c in book.vs(rule.reason_code)[1]] if rule.reason_code else [], dtype=np.int32
    )
    profile = world.BP_PROFILE if rule.kind == "bp" else rule.profile
    routes = np.array([book.coding(c) for c in book.vs(rule.route)[1]] if rule.route else [], dtype=np.int32)
    return _CompiledRule(
        rule,
        ix,
        alt,
        np.array([book.string(s) for s, _ in status], dtype=np.int32),
        weights / weights.sum(),
        reasons,
        values,
        book.string(url or None),
        rcodes,
        book.string(profile),
        routes,
    )


class _World:
    """Everything a worker needs, built once per process."""

    def __init__(self) -> None:
        self.book = _Book()
        self.layers = [[_compile(self.book, r) for r in layer] for layer in world.LAYERS]
        b = self.book
        self.sex = {
            f: b.coding((SNOMED, *x))
            for f, x in ((True, ("248152002", "Female")), (False, ("248153007", "Male")))
        }
        self.payers = [b.coding((SOP, code, display)) for code, display, _ in world.PAYERS]
        self.cat = {
            name: b.coding((OBSERVATION_CATEGORY, name, name.replace("-", " ").title()))
            for name in ("laboratory", "vital-signs", "imaging", "social-history", "survey")
        }
        self.cond_cat = {
            name: b.coding((CONDITION_CATEGORY, name, display))
            for name, display in (
                ("encounter-diagnosis", "Encounter Diagnosis"),
                ("problem-list-item", "Problem List Item"),
            )
        }
        self.bp_parts = (b.coding(world.BP_SYSTOLIC), b.coding(world.BP_DIASTOLIC))
        for s in (
            "mm[Hg]",
            "Quantity",
            "CodeableConcept",
            "dateTime",
            "Period",
            "order",
            BP_PROFILE_URL,
            ACT_CODE,
        ):
            b.string(s)
        self.codings = b.coding_series()


BP_PROFILE_URL = world.BP_PROFILE
_WORLD: _World | None = None


def _the_world() -> _World:
    global _WORLD
    if _WORLD is None:
        _WORLD = _World()
    return _WORLD


def _step(
    ages: npt.NDArray[np.int64], prob: float | tuple[tuple[int, float], ...]
) -> npt.NDArray[np.float64]:
    """A constant, or a step function of age ``((age_from, p), ...)``; 0 below the first step."""
    if isinstance(prob, float | int):
        return np.full(ages.shape, float(prob))
    starts = np.array([a for a, _ in prob])
    ps = np.array([0.0] + [p for _, p in prob])
    return ps[np.searchsorted(starts, ages, side="right")]


def _choice(rng: np.random.Generator, n: int, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    picks = np.searchsorted(np.cumsum(weights), rng.random(n) * weights.sum(), side="right")
    return np.asarray(picks.clip(0, len(weights) - 1), dtype=np.int64)


class _Events:
    """Columns of generated events of one table, as numpy arrays, appended rule by rule."""

    FIELDS = (
        "pidx",
        "start",
        "end",
        "end_null",
        "code",
        "code2",
        "status",
        "neg",
        "reason",
        "value",
        "unit",
        "vconcept",
        "category",
        "kind",
        "sys",
        "dia",
        "vs",
        "rcode",
        "profile",
        "route",
        "uid",  # the event's number in its table (before hard cases), so that rows can name it
        "ref",  # the anchor event's uid (-1: none)
        "rank",  # listed on the anchor encounter with this rank (0: not listed)
        "use",
        "dup",  # a duplicate injected as a hard case (never listed again)
    )

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {f: [] for f in self.FIELDS}

    def add(self, **cols: np.ndarray) -> None:
        for f in self.FIELDS:
            self.parts[f].append(cols[f])

    def arrays(self) -> dict[str, np.ndarray] | None:
        if not self.parts["pidx"]:
            return None
        return {f: np.concatenate(v) for f, v in self.parts.items()}


def _patients(cfg: SynthConfig, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    bands = world.AGE_BANDS
    shares = np.array([s for _, s in bands])
    band = _choice(rng, n, shares)
    lows = np.array([a for a, _ in bands])
    highs = np.array([a for a, _ in bands[1:]] + [world.MAX_AGE + 1])
    age = lows[band] + (rng.random(n) * (highs[band] - lows[band])).astype(np.int64)
    birth = (
        (cfg.period_year - age + 1 - 1970).astype("datetime64[Y]").astype("datetime64[D]") - 1
    ) - rng.integers(0, 365, n)
    return {
        "age": age,
        "female": rng.random(n) < world.FEMALE_SHARE,
        "birth": birth,
        "race": _choice(rng, n, np.array([s for *_, s in world.RACES])),
        "ethnicity": _choice(rng, n, np.array([s for *_, s in world.ETHNICITIES])),
        "state": _choice(rng, n, np.array([s for *_, s in world.STATES])),
        "zip": rng.integers(0, 1000, n),
        "deceased": rng.random(n) < world.DECEASED_SHARE,
        "death_day": rng.integers(0, 365, n),
        "partial_birth": rng.random(n) < 0.005,
        "payer_u": rng.random(n),
        "cov_days": rng.integers(30, 3650, n),
    }


@dataclass
class _State:
    """What later rules (and layers) see of earlier ones."""

    flags: dict[str, np.ndarray]  # rule key -> the patients it selected
    anchors: dict[str, tuple[I64, I64, I64]]  # rule key -> (patient index, start, uid) of its events
    uids: dict[str, int]  # table -> events numbered so far


def _events(
    cfg: SynthConfig,
    w: _World,
    rng: np.random.Generator,
    pat: dict[str, np.ndarray],
    rules: list[_CompiledRule],
    state: _State,
) -> dict[str, _Events]:
    n = len(pat["age"])
    p0 = (np.datetime64(f"{cfg.period_year}-01-01") - np.datetime64("1970-01-01")).astype(np.int64)
    tables: dict[str, _Events] = {}
    flags, anchors = state.flags, state.anchors
    birth0 = (pat["birth"] - np.datetime64("1970-01-01")).astype(np.int64)
    for cr in rules:
        r = cr.rule
        elig = (pat["age"] >= r.ages[0]) & (pat["age"] <= r.ages[1])
        if r.sex is not None:
            elig &= pat["female"] == (r.sex == "female")
        if r.given is not None:
            key = r.given.lstrip("!")
            elig &= ~flags[key] if r.given.startswith("!") else flags[key]
        if r.anchor is not None:
            apidx, astart, auid = anchors[r.anchor]
            keep = elig[apidx] & (rng.random(len(apidx)) < _step(pat["age"][apidx], r.prob))
            pidx = apidx[keep]
            ref = auid[keep]
            m = len(pidx)
            sel = np.zeros(n, dtype=bool)
            sel[pidx] = True
            day = rng.integers(r.offset[0], r.offset[1] + 1, m)
            start = astart[keep] + day * US_PER_DAY + rng.integers(r.lag[0], r.lag[1] + 1, m) * 60_000_000
        else:
            sel = elig & (rng.random(n) < _step(pat["age"], r.prob))
            pos = np.flatnonzero(sel)
            if r.doses:
                counts = np.full(len(pos), r.doses, dtype=np.int64)
            elif r.extra:
                counts = 1 + rng.poisson(r.extra, len(pos))
            else:
                counts = np.ones(len(pos), dtype=np.int64)
            pidx = np.repeat(pos, counts)
            m = len(pidx)
            if r.doses:
                width = (r.window[1] - r.window[0] + 1) // r.doses
                dose = np.tile(np.arange(r.doses), len(pos))
                day = r.window[0] + dose * width + rng.integers(0, max(width, 1), m)
            else:
                day = rng.integers(r.window[0], r.window[1] + 1, m)
            base = birth0[pidx] if r.from_birth else p0
            start = (base + day) * US_PER_DAY + rng.integers(7 * 3600, 20 * 3600, m) * 1_000_000
            ref = np.full(m, -1, dtype=np.int64)
        flags[r.key] = flags.get(r.key, np.zeros(n, dtype=bool)) | sel
        first_uid = state.uids.get(r.table, 0)
        uid = np.arange(first_uid, first_uid + m, dtype=np.int64)
        state.uids[r.table] = first_uid + m
        anchors[r.key] = (pidx, start, uid)
        if r.table in POINT_TABLES:
            dur = np.zeros(m, dtype=np.int64)
        elif r.table == "condition":
            dur = rng.integers(30, 400, m) * US_PER_DAY
        else:
            dur = rng.integers(r.minutes[0], r.minutes[1] + 1, m) * 60_000_000
        status = cr.statuses[_choice(rng, m, cr.weights)]
        end_null = np.zeros(m, dtype=bool)
        if r.table == "condition":
            end_null = np.isin(status, [w.book.string("active"), w.book.string("recurrence")])
        neg = rng.random(m) < r.negated
        value = np.full(m, np.nan)
        sys_ = np.full(m, np.nan)
        dia = np.full(m, np.nan)
        if r.value is not None:
            mean, sd, lo, hi = r.value
            value = np.round(np.clip(rng.normal(mean, sd, m), lo, hi), r.decimals)
        if r.kind == "bp":
            sm, ss, dm, ds = r.bp
            z = rng.normal(0, 1, (2, m))
            sys_ = np.round(np.clip(sm + ss * z[0], 80, 220))
            dia = np.round(np.clip(dm + ds * (0.6 * z[0] + 0.8 * z[1]), 40, 130))
        vconcept = cr.values[rng.integers(0, len(cr.values), m)] if len(cr.values) else np.full(m, -1)
        code_pos = rng.integers(0, len(cr.codes), m)
        kind = w.book.string(r.kind) if r.table == "encounter" else 0
        cat = (
            w.cat.get(r.category or "", -1)
            if r.table == "observation"
            else (w.cond_cat[r.category or "encounter-diagnosis"] if r.table == "condition" else -1)
        )
        rcode = cr.rcodes[rng.integers(0, len(cr.rcodes), m)] if len(cr.rcodes) else np.full(m, -1)
        route = cr.routes[rng.integers(0, len(cr.routes), m)] if len(cr.routes) else np.full(m, -1)
        tables.setdefault(r.table, _Events()).add(
            pidx=pidx,
            start=start,
            end=start + dur,
            end_null=end_null,
            code=cr.codes[code_pos],
            code2=cr.alt[code_pos],
            status=np.where(neg, w.book.string(_NEGATED[r.table]), status),
            neg=neg,
            reason=cr.reasons[rng.integers(0, len(cr.reasons), m)],
            value=value,
            unit=np.full(m, w.book.string(r.unit)),
            vconcept=vconcept,
            category=np.full(m, cat),
            kind=np.full(m, kind),
            sys=sys_,
            dia=dia,
            vs=np.full(m, cr.valueset_url),
            rcode=rcode,
            profile=np.full(m, cr.profile),
            route=route,
            uid=uid,
            ref=ref,
            rank=np.full(m, r.rank if r.anchor is not None else 0),
            use=np.full(m, w.book.string(r.use)),
            dup=np.zeros(m, dtype=bool),
        )
    return tables


_NEGATED = {
    "procedure": "not-done",
    "observation": "cancelled",
    "medication_request": "completed",
    "encounter": "cancelled",
    "condition": "active",
    "immunization": "not-done",
    "service_request": "completed",
    "medication_dispense": "declined",
    "medication_administration": "not-done",
    LOCATION: "completed",  # never negated (every rule needs an entry)
}


def _inject(rng: np.random.Generator, table: str, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the hard cases: partial dates, offsets, second codings, duplicates (all at low, fixed rates)."""
    m = len(ev["pidx"])
    # instants are exact (fraction precision): the stored end is then its own high boundary
    prec_s = np.full(m, PREC_FRACTION, dtype=np.int8)
    prec_e = np.where(ev["end_null"], np.int8(-1), np.int8(PREC_FRACTION)).astype(np.int8)
    tz = np.where(
        rng.random(m) < world.OFFSET_RATE,
        np.array(world.TZ_OFFSETS)[rng.integers(0, len(world.TZ_OFFSETS), m)],
        0,
    )
    if table in PARTIAL_TABLES:
        partial = rng.random(m) < world.PARTIAL_DATE_RATE
        unit = np.where(rng.random(m) < 0.5, PREC_YEAR, PREC_MONTH).astype(np.int8)
        t = ev["start"].astype("datetime64[us]")
        for p, u in ((PREC_YEAR, "Y"), (PREC_MONTH, "M")):
            mask = partial & (unit == p)
            floor = t[mask].astype(f"datetime64[{u}]")
            ev["start"][mask] = floor.astype("datetime64[us]").astype(np.int64)
            ev["end"][mask] = (floor + 1).astype("datetime64[us]").astype(np.int64) - 1
            prec_s[mask] = p
            prec_e[mask] = p
        ev["end_null"] = ev["end_null"] & ~partial
        tz = np.where(partial, -1, tz)
    ev["code2"] = np.where(rng.random(m) < world.SECOND_CODING_RATE, ev["code2"], -1)
    ev["prec_s"], ev["prec_e"], ev["tz"] = prec_s, prec_e, tz
    dup = np.flatnonzero(rng.random(m) < world.DUPLICATE_RATE)
    order = np.concatenate([np.arange(m), dup])
    ev = {k: v[order] for k, v in ev.items()}
    ev["dup"][m:] = True
    sort = np.lexsort((ev["start"], ev["pidx"]))
    return {k: v[sort] for k, v in ev.items()}


def _codes(w: _World, ix: np.ndarray, ix2: np.ndarray | None = None) -> pl.Expr:
    """A ``List(Coding)`` column from coding indexes (-1: none); a second index adds a second coding."""
    first = w.codings.gather(np.maximum(ix, 0))
    one = pl.when(pl.lit(pl.Series(ix >= 0))).then(pl.concat_list(pl.lit(first)))
    if ix2 is None:
        return one
    second = w.codings.gather(np.maximum(ix2, 0))
    return (
        pl.when(pl.lit(pl.Series(ix2 >= 0)))
        .then(pl.concat_list(pl.lit(first), pl.lit(second)))
        .otherwise(one)
    )


def _utc(us: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    s = pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    return s if null is None else pl.select(pl.when(pl.lit(pl.Series(~null))).then(pl.lit(s))).to_series()


def _frame(
    cfg: SynthConfig, w: _World, table: str, bucket: int, ids: pl.Series, ev: dict[str, np.ndarray]
) -> pl.DataFrame:
    m = len(ev["pidx"])
    strings = w.book.string_series()
    pid = ids.gather(ev["pidx"])
    first = np.r_[True, ev["pidx"][1:] != ev["pidx"][:-1]] if m else np.zeros(0, dtype=bool)
    seq = np.arange(m) - np.maximum.accumulate(np.where(first, np.arange(m), 0))

    def s(key: str) -> pl.Series:
        return strings.gather(ev[key])

    start = _utc(ev["start"])
    base = pl.DataFrame({"patient_id": pid}).with_columns(
        pl.lit(bucket, pl.UInt16).alias("bucket"),
        pl.format("{}-{}{}", pl.col("patient_id"), pl.lit(ID_PREFIX[table]), pl.lit(pl.Series(seq))).alias(
            "id"
        ),
        pl.lit(cfg.source).alias("source"),
        _last_updated(cfg).alias("meta_last_updated"),
        pl.lit(start).alias("start"),
        pl.lit(_utc(ev["end"], ev["end_null"])).alias("end"),
        pl.lit(pl.Series(ev["prec_s"])).alias("start_prec"),
        pl.lit(pl.Series(ev["prec_e"])).replace(-1, None).alias("end_prec"),
        pl.lit(pl.Series(ev["tz"]).cast(pl.Int16)).replace(-1, None).alias("tz_offset_min"),
        pl.lit(s("status")).alias("status"),
    )
    neg = ev["neg"]
    reason = _codes(w, np.where(neg, ev["reason"], -1))
    code = _codes(w, ev["code"], ev["code2"])
    if table == "encounter":
        cols = [
            pl.lit(ACT_CODE).alias("class_system"),
            pl.lit(s("kind")).alias("class_code"),
            code.alias("type"),
        ]
    elif table == "condition":
        cols = [
            pl.col("status").alias("clinical_status"),
            pl.lit("confirmed").alias("verification_status"),
            _codes(w, ev["category"]).alias("category"),
            code.alias("code"),
            pl.lit("dateTime").alias("onset_type"),
            pl.when(pl.col("end").is_not_null()).then(pl.lit("dateTime")).alias("abatement_type"),
            pl.col("start").alias("recorded_date"),
        ]
    elif table == "procedure":
        cols = [
            reason.alias("status_reason"),
            code.alias("code"),
            _codes(w, ev["rcode"]).alias("reason_code"),
            pl.lit("Period").alias("performed_type"),
            pl.when(pl.lit(pl.Series(neg))).then(pl.lit(s("vs"))).alias("not_done_valueset"),
            pl.when(pl.lit(pl.Series(neg))).then(pl.col("start")).alias("recorded_date"),  # qicore-recorded
        ]
    elif table == "observation":
        has_profile = ev["profile"] > 0
        has_q = ~np.isnan(ev["value"])
        has_c = ev["vconcept"] >= 0
        cols = [
            reason.alias("status_reason"),
            _codes(w, ev["category"]).alias("category"),
            code.alias("code"),
            pl.when(pl.lit(pl.Series(has_profile)))
            .then(pl.concat_list(pl.lit(s("profile"))))
            .alias("profiles"),
            pl.lit("dateTime").alias("effective_type"),
            (pl.col("start") + pl.duration(hours=6)).alias("issued"),
            pl.when(pl.lit(pl.Series(has_q)))
            .then(pl.lit("Quantity"))
            .when(pl.lit(pl.Series(has_c)))
            .then(pl.lit("CodeableConcept"))
            .alias("value_type"),
            pl.lit(pl.Series(ev["value"])).fill_nan(None).alias("value_quantity"),
            pl.lit(s("unit")).alias("value_unit"),
            _codes(w, ev["vconcept"]).alias("value_concept"),
            pl.when(pl.lit(pl.Series(neg))).then(pl.lit(s("vs"))).alias("not_done_valueset"),
        ]
    elif table == "medication_request":
        cols = [
            pl.lit("order").alias("intent"),
            pl.lit(pl.Series(neg)).alias("do_not_perform"),
            reason.alias("reason_refused"),
            code.alias("medication"),
            _codes(w, ev["rcode"]).alias("reason_code"),
            pl.col("start").alias("authored_on"),
            pl.lit(1.0).alias("dose_value"),
            pl.lit("1").alias("dose_unit"),
            pl.lit(1, pl.Int32).alias("timing_frequency"),
            pl.lit(1.0).alias("timing_period"),
            pl.lit("d").alias("timing_period_unit"),
            pl.lit(30.0).alias("expected_supply_days"),
            pl.lit(30.0).alias("dispense_quantity"),
            pl.lit(2, pl.Int32).alias("refills"),
        ]
    elif table == "medication_dispense":
        cols = [
            code.alias("medication"),
            pl.col("start").alias("when_prepared"),
            pl.col("start").alias("when_handed_over"),
            pl.lit(30.0).alias("quantity"),
            pl.lit("{tbl}").alias("quantity_unit"),
            pl.lit(30.0).alias("days_supply"),
            pl.lit(1.0).alias("dose_value"),
            pl.lit("{tbl}").alias("dose_unit"),
            pl.lit(1, pl.Int32).alias("timing_frequency"),
            pl.lit(1.0).alias("timing_period"),
            pl.lit("d").alias("timing_period_unit"),
        ]
    elif table == "medication_administration":
        cols = [
            reason.alias("status_reason"),
            code.alias("medication"),
            _codes(w, ev["route"]).alias("route"),
            pl.when(pl.lit(pl.Series(neg))).then(pl.lit(s("vs"))).alias("not_done_valueset"),
            pl.when(pl.lit(pl.Series(neg))).then(pl.col("start")).alias("recorded"),  # qicore-recorded
        ]
    elif table == "service_request":
        cols = [
            pl.lit("order").alias("intent"),
            pl.lit(pl.Series(neg)).alias("do_not_perform"),
            reason.alias("reason_refused"),
            code.alias("code"),
            _codes(w, ev["rcode"]).alias("reason_code"),
            pl.col("start").alias("authored_on"),
            pl.lit("dateTime").alias("occurrence_type"),
        ]
    elif table == "immunization":
        cols = [
            reason.alias("status_reason"),
            code.alias("vaccine_code"),
            pl.col("start").alias("recorded"),
            pl.lit(True).alias("primary_source"),
        ]
    else:
        raise ValueError(f"the generator has no rules for table {table!r}")
    frame = base.with_columns(cols)
    if table == "condition":
        frame = frame.drop("status")  # conditions have clinical_status instead
    if table == "observation":
        frame = frame.with_columns(
            pl.lit(pl.Series(ev["sys"])).alias("_sys"), pl.lit(pl.Series(ev["dia"])).alias("_dia")
        )
    return frame


def _last_updated(cfg: SynthConfig) -> pl.Expr:
    """A fixed ``meta.lastUpdated`` (never the wall clock: the same seed must give the same bytes)."""
    return pl.lit(datetime(cfg.period_year + 1, 1, 15, tzinfo=UTC)).cast(pl.Datetime("us", "UTC"))


def _components(w: _World, obs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split the blood-pressure panels' systolic/diastolic into ``observation_component`` rows."""
    panels = obs.filter(pl.col("_sys").is_not_nan())
    sys_code, dia_code = (w.codings.gather([i]) for i in w.bp_parts)
    parts = [
        panels.select(
            "patient_id",
            "bucket",
            pl.col("id").alias("observation_id"),
            pl.lit(ix, pl.Int16).alias("component_ix"),
            "source",
            "start",
            pl.lit(code.implode()).first().alias("code"),
            pl.lit("Quantity").alias("value_type"),
            pl.col(col).alias("value_quantity"),
            pl.lit("mm[Hg]").alias("value_unit"),
        )
        for ix, (code, col) in enumerate(((sys_code, "_sys"), (dia_code, "_dia")))
    ]
    comp = pl.concat(parts).sort("patient_id", "start", "observation_id", "component_ix")
    return obs.drop("_sys", "_dia"), conform("observation_component", comp)


def _patient_frames(
    cfg: SynthConfig, w: _World, bucket: int, ids: pl.Series, pat: dict[str, np.ndarray]
) -> dict[str, pl.DataFrame]:
    n = len(ids)
    female = pat["female"]
    race = [(c, d) for c, d, _ in world.RACES]
    eth = [(c, d) for c, d, _ in world.ETHNICITIES]
    birth = pat["birth"]
    birth = np.where(pat["partial_birth"], birth.astype("datetime64[M]").astype("datetime64[D]"), birth)
    death = (
        (np.datetime64(f"{cfg.period_year}-01-01") + pat["death_day"])
        .astype("datetime64[us]")
        .astype(np.int64)
    )
    states = [s for s, _, _ in world.STATES]
    prefixes = pl.Series([p for _, p, _ in world.STATES]).gather(pat["state"])
    patient = pl.DataFrame(
        {
            "patient_id": ids,
            "bucket": pl.Series([bucket] * n, dtype=pl.UInt16),
            "source": [cfg.source] * n,
            "birth_date": pl.Series(birth.astype("datetime64[D]")),
            "birth_date_prec": pl.Series(
                np.where(pat["partial_birth"], PREC_MONTH, PREC_DAY).astype(np.int8)
            ),
            "gender": pl.Series(np.where(female, "female", "male")),
            "birth_sex": pl.Series(np.where(female, "F", "M")),
            "deceased": pl.Series(pat["deceased"]),
        }
    ).with_columns(
        _last_updated(cfg).alias("meta_last_updated"),
        _codes(w, np.where(female, w.sex[True], w.sex[False])).alias("sex"),
        pl.when(pl.col("deceased")).then(pl.lit(_utc(death))).alias("deceased_datetime"),
        pl.concat_list(pl.lit(pl.Series([race[i][0] for i in range(len(race))]).gather(pat["race"]))).alias(
            "race_omb"
        ),
        pl.lit(pl.Series([race[i][1] for i in range(len(race))]).gather(pat["race"])).alias("race_text"),
        pl.concat_list(
            pl.lit(pl.Series([eth[i][0] for i in range(len(eth))]).gather(pat["ethnicity"]))
        ).alias("ethnicity_omb"),
        pl.lit(pl.Series([eth[i][1] for i in range(len(eth))]).gather(pat["ethnicity"])).alias(
            "ethnicity_text"
        ),
        pl.lit(pl.Series(states).gather(pat["state"])).alias("address_state"),
        pl.format("{}{}", pl.lit(prefixes), pl.lit(pl.Series(pat["zip"])).cast(pl.String).str.zfill(3)).alias(
            "address_postal_code"
        ),
        pl.lit("US").alias("address_country"),
        pl.lit("org-synthetic").alias("managing_organization_id"),
    )
    # one coverage per patient: payer by age band, enrolled from some years before the period, still active
    mixes = world.PAYER_MIX
    band = np.searchsorted(np.array([a for a, _ in mixes]), pat["age"], side="right") - 1
    cum = np.cumsum(np.array([m for _, m in mixes]), axis=1)[band]
    payer = (pat["payer_u"][:, None] > cum).sum(axis=1).clip(0, len(world.PAYERS) - 1)
    start = ((np.datetime64(f"{cfg.period_year}-01-01") - pat["cov_days"]).astype("datetime64[us]")).astype(
        np.int64
    )
    names = pl.Series([name for _, _, name in world.PAYERS]).gather(payer)
    coverage = pl.DataFrame({"patient_id": ids}).with_columns(
        pl.lit(bucket, pl.UInt16).alias("bucket"),
        (pl.col("patient_id") + "-cov0").alias("id"),
        pl.lit(cfg.source).alias("source"),
        _last_updated(cfg).alias("meta_last_updated"),
        pl.lit(_utc(start)).alias("start"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("end"),
        pl.lit(PREC_DAY, pl.Int8).alias("start_prec"),
        pl.lit(None, pl.Int8).alias("end_prec"),
        pl.lit(None, pl.Int16).alias("tz_offset_min"),
        pl.lit("active").alias("status"),
        _codes(w, np.array(w.payers)[payer]).alias("type"),
        pl.concat_list(pl.lit(names)).alias("payor_names"),
        (pl.col("patient_id") + "-member").alias("subscriber_id"),
    )
    return {"patient": conform("patient", patient), "coverage": conform("coverage", coverage)}


def generate_bucket(
    cfg: SynthConfig, bucket: int, patient_numbers: npt.NDArray[np.int64]
) -> dict[str, pl.DataFrame]:
    """Every table of one bucket from the patient numbers hashed into it; depends only on (seed, bucket)."""
    w = _the_world()
    rng = np.random.default_rng([cfg.seed, bucket, 0x5EED])
    ids = pl.Series("patient_id", patient_ids(patient_numbers))
    pat = _patients(cfg, rng, len(ids))
    frames = _patient_frames(cfg, w, bucket, ids, pat)
    state = _State({}, {}, {})
    layers: list[dict[str, dict[str, np.ndarray]]] = []
    for i, rules in enumerate(w.layers):
        # the first layer continues the patients' stream (its bytes predate layers); later ones get their own
        stream = rng if i == 0 else np.random.default_rng([cfg.seed, bucket, 0x5EED, i])
        layer: dict[str, dict[str, np.ndarray]] = {}
        for table, events in sorted(_events(cfg, w, stream, pat, rules, state).items()):
            arrays = events.arrays()
            if arrays is not None:
                layer[table] = arrays if table == LOCATION else _inject(stream, table, arrays)
        layers.append(layer)
    tables = _merge(layers)
    stays = tables.pop(LOCATION, None)
    built = {table: _frame(cfg, w, table, bucket, ids, ev) for table, ev in tables.items()}
    if "encounter" in built:
        built["encounter"] = _link_encounters(w, built, tables, stays)
    for table, frame in built.items():
        if table == "observation":
            frame, frames["observation_component"] = _components(w, frame)
        frames[table] = conform(table, frame)
    return frames


def _merge(layers: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Each table's events of every layer, by patient and start (a stable sort: a layer's order is kept)."""
    merged: dict[str, dict[str, np.ndarray]] = {}
    for table in sorted({t for layer in layers for t in layer}):
        parts = [layer[table] for layer in layers if table in layer]
        if len(parts) == 1:
            merged[table] = parts[0]
            continue
        ev = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        order = np.lexsort((ev["start"], ev["pidx"]))
        merged[table] = {k: v[order] for k, v in ev.items()}
    return merged


def _listed(
    w: _World, frame: pl.DataFrame, ev: dict[str, np.ndarray], column: str, id_field: str
) -> pl.DataFrame | None:
    """``encounter uid -> list`` of the rows listed on their anchor encounter; one rank 1 per encounter (a later
    rule's rank 1 becomes 2: CQMCommon's principalDiagnosis() is a singleton)."""
    keep = (ev["rank"] > 0) & (ev["ref"] >= 0) & ~ev["dup"]
    if not keep.any():
        return None
    rows = pl.DataFrame(
        {
            "_uid": ev["ref"][keep],
            "_order": ev["uid"][keep],
            id_field: frame["id"].filter(pl.Series(keep)),
            "rank": pl.Series(ev["rank"][keep], dtype=pl.Int32),
            "use": w.book.string_series().gather(ev["use"][keep]),
        }
    ).sort("_uid", "rank", "_order")
    second = (pl.col("rank") == 1) & (pl.int_range(pl.len()).over("_uid") > 0)
    rows = rows.with_columns(pl.when(second).then(pl.lit(2, pl.Int32)).otherwise("rank").alias("rank"))
    fields = [id_field, "use", "rank", pl.lit(None, pl.String).alias("present_on_admission")]
    entry = pl.struct(fields) if column == "diagnoses" else pl.struct(id_field, "rank")
    return rows.group_by("_uid", maintain_order=True).agg(entry.alias(column))


def _link_encounters(
    w: _World,
    built: dict[str, pl.DataFrame],
    tables: dict[str, dict[str, np.ndarray]],
    stays: dict[str, np.ndarray] | None,
) -> pl.DataFrame:
    """Nest into each encounter the conditions and procedures listed on it and its location stays."""
    lists = [
        _listed(w, built[table], tables[table], column, id_field)
        for table, column, id_field in (
            ("condition", "diagnoses", "condition_id"),
            ("procedure", "procedures", "procedure_id"),
        )
        if table in built
    ]
    if stays is not None and len(stays["ref"]):
        strings = w.book.string_series()
        lists.append(
            pl.DataFrame({"_uid": stays["ref"]})
            .with_columns(
                pl.lit(_codes_series(w, stays["code"])).alias("type"),
                pl.lit(strings.gather(stays["status"])).alias("status"),
                pl.lit(_utc(stays["start"])).alias("start"),
                pl.lit(_utc(stays["end"])).alias("end"),
            )
            .with_columns(
                pl.format("location-{}", pl.col("type").list.first().struct.field("code")).alias(
                    "location_id"
                )
            )
            .sort("_uid", "start")
            .group_by("_uid", maintain_order=True)
            .agg(pl.struct("location_id", "status", "start", "end", "type").alias("locations"))
        )
    encounter = built["encounter"].with_columns(pl.Series("_uid", tables["encounter"]["uid"]))
    for found in lists:
        if found is not None:
            encounter = encounter.join(found, on="_uid", how="left", maintain_order="left")
    return encounter.drop("_uid")


def _codes_series(w: _World, ix: np.ndarray) -> pl.Series:
    """A ``List(Coding)`` series of one coding per row."""
    return pl.select(pl.concat_list(pl.lit(w.codings.gather(ix)))).to_series()


def patient_ids(numbers: npt.NDArray[np.int64]) -> list[str]:
    """``p`` + the 8-digit patient number: readable, compressible, and sorted like the numbers."""
    return [f"p{i:08d}" for i in numbers.tolist()]


def partition(cfg: SynthConfig) -> list[npt.NDArray[np.int64]]:
    """The patient numbers of every bucket, by the lake's stable hash of their ids."""
    numbers = np.arange(cfg.n_patients, dtype=np.int64)
    buckets = bucket_of(patient_ids(numbers), cfg.n_buckets)
    order = np.argsort(buckets, kind="stable")
    bounds = np.searchsorted(buckets[order], np.arange(cfg.n_buckets + 1))
    return [order[bounds[b] : bounds[b + 1]] for b in range(cfg.n_buckets)]


def _write(root: str, cfg: SynthConfig, bucket: int, numbers: npt.NDArray[np.int64]) -> list[FileEntry]:
    frames = generate_bucket(cfg, bucket, numbers)
    entries = [
        write_bucket(root, table, bucket, frame, cfg.n_buckets) for table, frame in sorted(frames.items())
    ]
    return [e for e in entries if e is not None]


def _write_task(args: tuple[str, SynthConfig, int, npt.NDArray[np.int64]]) -> list[FileEntry]:
    return _write(*args)


def generate(
    root: str, cfg: SynthConfig, progress: Callable[[int, list[FileEntry]], None] | None = None
) -> Manifest:
    """Generate ``cfg.n_patients`` patients into the lake at ``root`` (folder or ``s3://``), by bucket."""
    if cfg.n_patients < 1 or cfg.n_patients > 99_999_999:
        raise ValueError("n_patients must be in 1..99,999,999")
    writer = LakeWriter(
        root,
        cfg.n_buckets,
        created_by="measures-engine synth",
        sources=[
            {
                "name": cfg.source,
                "kind": "synthetic",
                "seed": cfg.seed,
                "patients": cfg.n_patients,
                "period_year": cfg.period_year,
            }
        ],
    )
    tasks = [(root, cfg, b, nums) for b, nums in enumerate(partition(cfg)) if len(nums)]
    for bucket, entries in zip((t[2] for t in tasks), _run(tasks, cfg.processes), strict=True):
        for entry in entries:
            writer.add(entry)
        if progress is not None:
            progress(bucket, entries)
    return writer.finish()


def _run(
    tasks: list[tuple[str, SynthConfig, int, npt.NDArray[np.int64]]], processes: int
) -> Iterator[list[FileEntry]]:
    if processes <= 1 or len(tasks) <= 1:
        yield from map(_write_task, tasks)
        return
    with mp.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap(_write_task, tasks)

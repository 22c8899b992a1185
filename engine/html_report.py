"""A self-contained, single-file HTML report of a run: inline CSS and SVG, no script, nothing fetched
at view time.

Per measure and group: the rate with its Wilson 95 % confidence interval, the population counts as bars, the
attrition funnel, the rate per stratum and per supplemental-data value (sex, race, ethnicity, payer) with
their intervals; then the run's provenance (dataset manifest hash, library hash, plan hashes, value-set URLs
and versions, period, time-zone policy, engine version). The output is a pure function of its inputs (no
clock),
so rebuilding the report of a run gives the same bytes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from engine.explain import attrition_frame
from engine.plan import MeasurePlan
from engine.populations import FHIR_CODES
from engine.report import as_tally, group_populations, measure_score

Z95 = 1.959963984540054

# Displays of the codes the supplemental data carry (CDC race & ethnicity, Source of Payment Typology roots).
DISPLAYS: dict[str, dict[str, str]] = {
    "sex": {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"},
    "race": {
        "1002-5": "American Indian or Alaska Native",
        "2028-9": "Asian",
        "2054-5": "Black or African American",
        "2076-8": "Native Hawaiian or Other Pacific Islander",
        "2106-3": "White",
        "2131-1": "Other Race",
    },
    "ethnicity": {"2135-2": "Hispanic or Latino", "2186-5": "Not Hispanic or Latino"},
    "payer": {
        "1": "Medicare",
        "2": "Medicaid",
        "3": "Other government",
        "4": "Corrections",
        "5": "Private insurance",
        "6": "Blue Cross/Blue Shield",
        "7": "Managed care",
        "8": "No payment",
        "81": "Self-pay",
        "9": "Miscellaneous/other",
    },
}
SDE_TITLES = {"sex": "Sex", "race": "Race", "ethnicity": "Ethnicity", "payer": "Payer"}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _ci(ci: tuple[float, float] | None) -> str:
    """An interval as text, with more digits when it is narrower than the default rounding shows."""
    if ci is None:
        return "—"
    digits = 1 if ci[1] - ci[0] >= 0.002 else 3
    return f"{_pct(ci[0], digits)} – {_pct(ci[1], digits)}"


def _perf(counts: Mapping[str, int], scoring: str) -> tuple[int, int]:
    """(numerator, denominator) behind the score, for the interval."""
    if scoring == "ratio":
        return (
            counts.get("numerator", 0) - counts.get("numerator_exclusion", 0),
            counts.get("denominator", 0) - counts.get("denominator_exclusion", 0),
        )
    den = (
        counts.get("denominator", 0)
        - counts.get("denominator_exclusion", 0)
        - counts.get("denominator_exception", 0)
    )
    return counts.get("numerator", 0) - counts.get("numerator_exclusion", 0), den


# ------------------------------------------------------------------------------------------------ SVG charts


def rate_chart(rows: Sequence[tuple[str, int, int]], *, label_width: int = 230, width: int = 620) -> str:
    """Horizontal bars of rates with Wilson 95 % whiskers: rows of (label, numerator, denominator)."""
    bar_h, gap, top, right = 18, 8, 22, 150
    plot = width - label_width - right
    height = top + len(rows) * (bar_h + gap) + 6
    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_width + tick * plot
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 4}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top - 8}" class="tick" text-anchor="middle">{int(tick * 100)}%</text>'
        )
    for i, (label, num, den) in enumerate(rows):
        y = top + i * (bar_h + gap)
        rate = num / den if den else None
        out.append(
            f'<text x="{label_width - 8}" y="{y + bar_h - 5}" class="label" text-anchor="end">'
            f"<title>{_e(label)}</title>{_e(_clip(label, 34))}</text>"
        )
        out.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_h}" class="track"/>')
        if rate is not None:
            out.append(
                f'<rect x="{label_width}" y="{y}" width="{rate * plot:.1f}" height="{bar_h}" class="bar">'
                f"<title>{_e(label)}: {num:,}/{den:,} = {_pct(rate)}</title></rect>"
            )
            ci = wilson(num, den)
            if ci is not None:
                x0, x1, ym = label_width + ci[0] * plot, label_width + ci[1] * plot, y + bar_h / 2
                out.append(
                    f'<path d="M{x0:.1f} {ym - 5}v10M{x0:.1f} {ym}H{x1:.1f}M{x1:.1f} {ym - 5}v10" '
                    f'class="ci"/>'
                )
        text = f"{_pct(rate)}  n={den:,}" if rate is not None else f"—  n={den:,}"
        out.append(f'<text x="{label_width + plot + 8}" y="{y + bar_h - 5}" class="value">{_e(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def count_chart(rows: Sequence[tuple[str, int, str]], *, label_width: int = 230, width: int = 620) -> str:
    """Horizontal count bars scaled to the largest: rows of (label, count, css class)."""
    bar_h, gap, top, right = 18, 8, 4, 110
    plot = width - label_width - right
    largest = max([c for _, c, _ in rows] + [1])
    height = top + len(rows) * (bar_h + gap) + 2
    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, count, css) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = count / largest * plot
        out.append(
            f'<text x="{label_width - 8}" y="{y + bar_h - 5}" class="label" text-anchor="end">'
            f"{_e(label)}</text>"
        )
        out.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_h}" class="track"/>')
        out.append(
            f'<rect x="{label_width}" y="{y}" width="{w:.1f}" height="{bar_h}" class="{css}">'
            f"<title>{_e(label)}: {count:,}</title></rect>"
        )
        out.append(f'<text x="{label_width + plot + 8}" y="{y + bar_h - 5}" class="value">{count:,}</text>')
    out.append("</svg>")
    return "".join(out)


def funnel_chart(steps: Sequence[tuple[str, int, int | None]], *, width: int = 620) -> str:
    """The attrition funnel: centred bars of the subjects kept after each step, with what the step dropped."""
    bar_h, gap, label_w, right = 22, 6, 230, 150
    plot = width - label_w - right
    largest = max([k for _, k, _ in steps] + [1])
    height = len(steps) * (bar_h + gap) + 4
    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, kept, dropped) in enumerate(steps):
        y = 2 + i * (bar_h + gap)
        w = max(kept / largest * plot, 1.0)
        x = label_w + (plot - w) / 2
        out.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 7}" class="label" text-anchor="end">{_e(label)}</text>'
        )
        out.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" class="funnel">'
            f"<title>{_e(label)}: kept {kept:,}</title></rect>"
        )
        note = f"{kept:,}" + ("" if not dropped else f"  (−{dropped:,})")
        out.append(f'<text x="{label_w + plot + 8}" y="{y + bar_h - 7}" class="value">{_e(note)}</text>')
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------------ the page

CSS = """
:root{--ink:#1d2733;--muted:#5b6776;--line:#dde3ea;--accent:#2f6fb2;--accent2:#9cc1e6;--warn:#b5542f;
--bg:#f6f8fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}main{max-width:1240px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:19px;margin:0}
h3{font-size:15px;margin:18px 0 6px;color:var(--muted)}
.sub{color:var(--muted);margin:0 0 18px}.card{background:#fff;border:1px solid var(--line);border-radius:8px;
padding:18px 20px;margin:0 0 18px}
.head{display:flex;justify-content:space-between;align-items:baseline;gap:16px;
flex-wrap:wrap}.badge{display:inline-block;border:1px solid var(--line);border-radius:10px;padding:0 8px;
font-size:12px;color:var(--muted);margin-left:6px}.kpis{display:flex;gap:28px;flex-wrap:wrap;margin:12px 0}
.kpi .v{font-size:28px;font-weight:600}.kpi .l{color:var(--muted);font-size:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:8px 24px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid var(--line);padding:4px 8px;
text-align:left;vertical-align:top}th{color:var(--muted);font-weight:600}td.n,td.nw{white-space:nowrap}td.n{text-align:right;
font-variant-numeric:tabular-nums}code{font-size:12px;word-break:break-all}.warn{color:var(--warn)}
svg.chart{max-width:100%;height:auto;display:block}svg .grid{stroke:var(--line)}svg .track{fill:#eef2f6}
svg .bar{fill:var(--accent)}svg .ci{stroke:var(--ink);stroke-width:1.4;fill:none}svg .pop{fill:var(--accent2)}
svg .num{fill:var(--accent)}svg .excl{fill:#d8a48f}svg .funnel{fill:var(--accent)}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:var(--ink)}
svg .tick{fill:var(--muted);
font-size:11px}svg .value{fill:var(--muted)}details summary{cursor:pointer;color:var(--accent)}
"""

POP_LABELS = {
    "initial_population": "Initial population",
    "denominator": "Denominator",
    "denominator_exclusion": "Denominator exclusion",
    "denominator_exception": "Denominator exception",
    "numerator": "Numerator",
    "numerator_exclusion": "Numerator exclusion",
    "measure_population": "Measure population",
    "measure_population_exclusion": "Measure population exclusion",
}


def _group_section(plan: MeasurePlan, group_id: str, rows: pl.DataFrame, total: int | None) -> str:
    pops = group_populations(plan, group_id)
    mine = rows.filter(pl.col("group_id") == group_id)
    whole_rows = mine.filter(pl.col("kind") == "group").to_dicts()
    whole = {p: int(whole_rows[0][p]) if whole_rows else 0 for p in pops}
    parts: list[str] = [f"<h3>{_e(group_id)}</h3>"]
    scored = plan.scoring in ("proportion", "ratio")
    if scored:
        num, den = _perf(whole, plan.scoring)
        rate = measure_score(plan.scoring, whole)
        ci = wilson(num, den) if plan.scoring == "proportion" else None
        ci_text = _ci(ci)
        kpis = [
            (_pct(rate), "rate"),
            (ci_text, "Wilson 95 % CI"),
            (f"{num:,}", "numerator (performance met)"),
            (f"{den:,}", "performance denominator"),
        ]
    else:
        kpis = [(f"{whole.get(p, 0):,}", POP_LABELS[p].lower()) for p in pops]
    parts.append(
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi"><div class="v">{_e(v)}</div><div class="l">{_e(label)}</div></div>'
            for v, label in kpis
        )
        + "</div>"
    )
    css = {
        "denominator_exclusion": "excl",
        "denominator_exception": "excl",
        "numerator_exclusion": "excl",
        "measure_population_exclusion": "excl",
        "numerator": "num",
    }
    bars = [(POP_LABELS[p], whole[p], css.get(p, "pop")) for p in pops]
    if scored:
        bars.append(("Performance denominator", _perf(whole, plan.scoring)[1], "pop"))
    funnel = attrition_frame(mine, plan, total=total).filter(pl.col("stratum").is_null())
    steps: list[tuple[str, int, int | None]] = []
    funnel_note = ""
    if funnel.height:
        # scaled to the initial population: the evaluated subjects (often 10x more) would flatten the rest
        labels = {
            "denominator_exclusion": "after exclusions",
            "denominator_exception": "after exceptions",
            "numerator_exclusion": "after numerator exclusions",
            "measure_population_exclusion": "after exclusions",
        }
        for r in funnel.iter_rows(named=True):
            steps.append((labels.get(r["population"], POP_LABELS[r["population"]]), r["kept"], r["dropped"]))
        first = funnel.row(0, named=True)
        if first["dropped"] is not None:
            evaluated = first["kept"] + first["dropped"]
            funnel_note = (
                f'<p class="sub">of {evaluated:,} evaluated subjects '
                f"({first['dropped']:,} not in the initial population)</p>"
            )
    parts.append(
        '<div class="grid2"><div><h3>Populations</h3>'
        + count_chart(bars)
        + "</div>"
        + "<div><h3>Attrition funnel</h3>"
        + funnel_chart(steps)
        + funnel_note
        + "</div></div>"
    )
    breakdowns: list[str] = []
    if scored:
        strata = mine.filter(pl.col("kind") == "stratifier")
        if strata.height:
            srows = []
            for r in strata.sort("key").iter_rows(named=True):
                n, d = _perf(r, plan.scoring)
                srows.append((r["key"], n, d))
            breakdowns.append("<div><h3>Strata</h3>" + rate_chart(srows) + "</div>")
        for name in plan.supplemental:
            sde = mine.filter((pl.col("kind") == "sde") & (pl.col("key") == name))
            if not sde.height:
                continue
            vrows = []
            for r in sde.iter_rows(named=True):
                n, d = _perf(r, plan.scoring)
                label = DISPLAYS.get(name, {}).get(r["value"], r["value"])
                vrows.append((label, n, d))
            vrows.sort(key=lambda t: (-t[2], t[0]))
            breakdowns.append(
                f"<div><h3>{_e(SDE_TITLES.get(name, name))}</h3>" + rate_chart(vrows) + "</div>"
            )
    if breakdowns:
        parts.append('<div class="grid2">' + "".join(breakdowns) + "</div>")
    elif scored:
        parts.append(
            '<p class="sub">No stratifier or supplemental-data breakdown in these results (the run kept '
            "counts only).</p>"
        )
    return "".join(parts)


def _measure_section(
    plan: MeasurePlan, rows: pl.DataFrame, period: tuple[str, str] | None, total: int | None
) -> str:
    start, end = period or (plan.period_start.isoformat(), plan.period_end.isoformat())
    better = "higher is better" if plan.improvement == "increase" else "lower is better"
    head = (
        f'<div class="head"><h2>{_e(plan.measure_id)} · {_e(plan.title)}</h2><div>'
        f'<span class="badge">v{_e(plan.version)}</span><span class="badge">{_e(plan.scoring)}</span>'
        f'<span class="badge">basis {_e(plan.basis)}</span><span class="badge">{_e(better)}</span>'
        f'<span class="badge">{_e(start)} – {_e(end)}</span></div></div>'
        f'<p class="sub">implements {_e(plan.spec)} · plan {_e(plan.content_hash)}</p>'
    )
    mine = rows.filter(pl.col("measure_id") == plan.measure_id)
    groups = "".join(_group_section(plan, g.id, mine, total) for g in plan.groups)
    return f'<section class="card" id="{_e(plan.measure_id)}">{head}{groups}</section>'


def _provenance(
    plans: Sequence[MeasurePlan], provenance: Mapping[str, Any], periods: Mapping[str, tuple[str, str]]
) -> str:
    items = [(k, v) for k, v in provenance.items() if v not in (None, "") and k != "warnings"]
    table = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in items)
    measures = "".join(
        f"<tr><td>{_e(p.measure_id)}</td><td>{_e(p.version)}</td><td><code>{_e(p.content_hash)}</code></td>"
        f"<td>{_e(' – '.join(periods.get(p.measure_id, (str(p.period_start), str(p.period_end)))))}</td>"
        f"<td class=n>{len(p.valueset_versions)}</td></tr>"
        for p in plans
    )
    vs: dict[tuple[str, str], list[str]] = {}
    for p in plans:
        for url, version in p.valueset_versions:
            vs.setdefault((url, version), []).append(p.measure_id)
    vs_rows = "".join(
        f"<tr><td><code>{_e(url)}</code></td><td>{_e(version or '(unversioned)')}</td>"
        f"<td>{_e(', '.join(ms))}</td></tr>"
        for (url, version), ms in sorted(vs.items())
    )
    warnings = "".join(f'<p class="warn">{_e(w)}</p>' for w in provenance.get("warnings", []) or [])
    return (
        f'<section class="card"><h2>Provenance</h2>{warnings}<table>{table}</table>'
        f"<h3>Measures</h3><table><tr><th>measure</th><th>version</th><th>plan hash</th><th>period</th>"
        f"<th>value sets</th></tr>{measures}</table>"
        f"<details><summary>Value sets ({len(vs)})</summary><table><tr><th>URL</th><th>version</th>"
        f"<th>used by</th></tr>{vs_rows}</table></details></section>"
    )


def render(
    data: pl.DataFrame | Mapping[str, Any],
    plans: Sequence[MeasurePlan],
    provenance: Mapping[str, Any] | None = None,
    *,
    periods: Mapping[str, tuple[str, str]] | None = None,
    total: int | None = None,
    title: str = "Quality measures report",
) -> str:
    """The report page. ``data``: subjects, a tally, a count frame or a summary.json document; ``provenance``:
    ordered label -> value (``warnings``: a list shown in red); ``periods``: measure id -> (start, end) when a
    run overrode the defaults; ``total``: evaluated subjects when the data do not carry it."""
    rows = as_tally(data)
    provenance = dict(provenance or {})
    periods = dict(periods or {})
    largest = rows.filter(pl.col("kind") == "group")["subjects"].max() if rows.height else None
    subjects = largest if isinstance(largest, int) else 0
    patients = total if total is not None else (subjects or None)
    nav = " · ".join(f'<a href="#{_e(p.measure_id)}">{_e(p.measure_id)}</a>' for p in plans)
    summary_rows = []
    for p in plans:
        for g in p.groups:
            r = rows.filter(
                (pl.col("measure_id") == p.measure_id)
                & (pl.col("group_id") == g.id)
                & (pl.col("kind") == "group")
            ).to_dicts()
            counts = {k: int(r[0][k]) if r else 0 for k in FHIR_CODES}
            num, den = _perf(counts, p.scoring)
            ci = wilson(num, den) if p.scoring == "proportion" else None
            summary_rows.append(
                f'<tr><td class=nw><a href="#{_e(p.measure_id)}">{_e(p.measure_id)}</a></td>'
                f"<td class=nw>{_e(g.id)}</td>"
                f"<td>{_e(p.title)}</td><td class=n>{counts['initial_population']:,}</td>"
                f"<td class=n>{den:,}</td>"
                f"<td class=n>{num:,}</td><td class=n>{_e(_pct(measure_score(p.scoring, counts)))}</td>"
                f"<td class=n>{_e(_ci(ci))}</td>"
                f"<td>{_e('↑' if p.improvement == 'increase' else '↓')}</td></tr>"
            )
    overview = (
        '<section class="card"><h2>Overview</h2><table><tr><th>measure</th><th>group</th><th>title</th>'
        "<th>IP</th><th>perf. denominator</th><th>numerator</th><th>rate</th><th>95 % CI</th>"
        "<th>better</th></tr>" + "".join(summary_rows) + "</table></section>"
    )
    sections = "".join(_measure_section(p, rows, periods.get(p.measure_id), patients) for p in plans)
    sub = f"{patients:,} subjects · " if patients else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="sub">{sub}{len(plans)} measures · {nav}</p>'
        f"{overview}{sections}{_provenance(plans, provenance, periods)}</main></body></html>\n"
    )

"""The territory report: the seed study's Table 1 for a year and model version, the same figures
for every year, the trend over models and cycles, protected areas, change and restoration
candidates. ``build_report`` computes it; ``to_markdown`` and ``to_csv`` write it out (the web page
renders the same object).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.area import area_km2, mining_area
from analysis.change import ChangeResult, PersistenceRule, change_over_years
from analysis.protected import ProtectedHits, protected_areas, protected_hits
from analysis.status import mine_points, resolve_model, resolve_year, year_cells
from analysis.territory import refresh_territory_cells
from db.store import REVIEW_STATES, Store
from pipeline.settings import Settings

#: Table 1, in order: key, label, unit.
TABLE1: tuple[tuple[str, str, str], ...] = (
    ("predicted_bbox", "Cells the model predicts as mines in the imagery's bounding box", "cells"),
    ("predicted_inside", "Cells the model predicts as mines inside the territory", "cells"),
    ("dropped", "Predicted cells dropped (centre outside the territory)", "cells"),
    ("confirmed", "Confirmed mines (reviewed as mine)", "cells"),
    ("false_positives", "False positives found by review (cells any model version predicted as "
                        "mines that a reviewer rejected)", "cells"),
    ("unreviewed", "Predicted mines not yet reviewed", "cells"),
    ("theoretical_cells", "Theoretical number of 1-km cells in the territory", "cells"),
    ("misinterpreted_pct", "Share of the territory misinterpreted (false positives found by "
                           "review / cells)", "%"),
    ("mine_points", "Mine points (confirmed + predicted not rejected)", "points"),
    ("mining_area_km2", "Estimated mining area (dissolved buffers)", "km²"),
    ("protected_points", "Mine points inside protected areas", "points"),
    ("protected_km2", "Mining area inside protected areas", "km²"),
    ("protected_pct", "Share of the mining area inside protected areas", "%"),
)


#: How each review state reads in the report (keys: ``db.store.REVIEW_STATES``).
REVIEW_STATE_NAMES: dict[str, str] = {
    "single": "Single-reviewed",
    "pending": "Awaiting a second review (single so far)",
    "agreed": "Double-reviewed, agreeing",
    "disagreed": "Disagreeing, pending adjudication (left out)",
    "adjudicated": "Adjudicated by a lead",
}


@dataclass
class Report:
    """Everything the report shows (see TABLE1 for the keys of ``table``)."""

    model_version: str
    threshold: float
    year: int
    years: list[int]
    buffer_m: float
    cell_km2: float
    territory: dict[str, Any] | None
    table: dict[str, float | int | None]
    per_year: list[dict[str, Any]]
    trend: list[dict[str, Any]]
    protected: ProtectedHits | None
    change: ChangeResult
    synthetic: bool
    notes: list[str] = field(default_factory=list)
    #: How the current labels were reviewed (``SecondReview.review_state_counts``; ``REVIEW_STATES``).
    review_states: dict[str, int] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, float | int | None, str]]:
        """Table 1 as (key, label, value, unit)."""
        return [(key, label, self.table.get(key), unit) for key, label, unit in TABLE1]


def _year_figures(store: Store, settings: Settings, model: dict[str, Any], year: int,
                  areas: list) -> tuple[dict[str, Any], ProtectedHits | None]:
    cells = year_cells(store, model, year)
    predicted = ~np.isnan(cells.score) & (cells.score >= cells.threshold)
    inside = cells.subset(cells.inside)
    points = mine_points(inside, settings.grid)
    mining = mining_area(points.x, points.y, settings.BUFFER_M)
    hits = protected_hits(areas, points, mining) if areas else None
    figures = {
        "year": year,
        "predicted_bbox": int(predicted.sum()),
        "predicted_inside": int((predicted & cells.inside).sum()),
        "dropped": int((predicted & ~cells.inside).sum()),
        "confirmed": inside.count("confirmed"),
        "false_positives": store.labels.false_positives_found(year=year),
        "unreviewed": inside.count("predicted"),
        "mine_points": len(points),
        "mining_area_km2": area_km2(mining),
        "scored_inside": int(np.count_nonzero(~np.isnan(inside.score))),
        "protected_points": hits.points_inside if hits else None,
        "protected_km2": hits.mining_km2_inside if hits else None,
        "protected_pct": (100 * hits.share if hits and hits.share is not None else None),
    }
    return figures, hits


def build_report(store: Store, settings: Settings, *, year: int | None = None,
                 model_version: str | None = None, rule: PersistenceRule | None = None) -> Report:
    """The report for ``year`` (default: the latest scored) and ``model_version`` (default: the
    active model). AnalysisError when there is no model or no scores for the year."""
    model = resolve_model(store, model_version)
    year = resolve_year(store, model, year)
    refresh_territory_cells(store, settings.grid)
    years = store.scores.scored_years(model["version"])
    territory = store.territory.territory()
    areas = protected_areas(store)
    cell_km2 = settings.CELL_SIZE_M ** 2 / 1e6
    per_year, hits_of_year, cells_of_year = [], None, []
    for each in years:
        figures, hits = _year_figures(store, settings, model, each, areas)
        per_year.append(figures)
        if each == year:
            hits_of_year = hits
    for each in years:
        cells = year_cells(store, model, each, inside_only=True)
        cells_of_year.append(cells)
    table = dict(next(f for f in per_year if f["year"] == year))
    notes = []
    if territory is not None:
        table["theoretical_cells"] = round(territory["area_km2"] / cell_km2)
    else:
        table["theoretical_cells"] = table["scored_inside"]
        notes.append("No territory loaded: every scored cell counts, and the scored cells stand in "
                     "for the theoretical number of cells (load one with `run.py territory FILE`).")
    theoretical = table["theoretical_cells"]
    table["misinterpreted_pct"] = 100 * table["false_positives"] / theoretical if theoretical else None
    if not areas:
        notes.append("No protected areas loaded (`run.py protected-areas FILE`).")
    scene_rows = store.scenes.scenes()
    synthetic = bool(scene_rows) and all(s["synthetic"] for s in scene_rows)
    change = change_over_years(cells_of_year, rule)
    if change.note:
        notes.append(change.note)
    states = store.second_review.review_state_counts()
    if states["disagreed"]:
        notes.append(f"{states['disagreed']:,} reviewed cell-years are left out: their two "
                     "reviewers disagree and no lead has adjudicated them yet (Adjudicate page).")
    return Report(model["version"], float(model["threshold"]), year, years, settings.BUFFER_M,
                  cell_km2, territory and {k: v for k, v in territory.items() if k != "geometry"},
                  table, per_year, _trend(store, year), hits_of_year, change, synthetic, notes,
                  states)


def _trend(store: Store, year: int) -> list[dict[str, Any]]:
    """Per model version, oldest first, with the cycle that made it: the cells it predicts as
    mines in ``year`` inside the territory, and the cells of ``year`` it predicted that review
    rejected (inside the territory)."""
    cycles = {c["new_model"]: c for c in store.cycles.cycles() if c["new_model"]}
    rows = []
    for model in store.models.models():
        # Kept summaries, not score rows: older versions' scores are pruned (KEEP_SCORED_MODELS).
        summary = store.scores.year_summary(model["version"], year)
        if summary is None:
            continue
        cycle = cycles.get(model["version"])
        rows.append({
            "model_version": model["version"], "created_at": model["created_at"],
            "cycle": cycle["id"] if cycle else None,
            "status": cycle["status"] if cycle else ("seed model" if not model["parent"] else ""),
            "predicted": summary["predicted_mines"],
            "false_positives_found": store.labels.false_positives_found(model["version"], year=year),
            "predicted_per_year": (cycle.get("predicted_mines") or {}) if cycle else {},
        })
    return rows


# output --------------------------------------------------------------------------------------
def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit in ("%",):
        return f"{value:.2f} %"
    if unit == "km²":
        return f"{value:,.1f} km²"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def title(report: Report) -> str:
    where = report.territory["name"] if report.territory else "the scored area (no territory)"
    return f"MineWatch report: {where}, {report.year}, model {report.model_version}"


def to_markdown(report: Report) -> str:
    """The report as Markdown (Table 1, per year, trend, protected areas, change, candidates)."""
    out = [f"# {title(report)}", ""]
    if report.synthetic:
        out += ["> **Synthetic demo data**: generated scenes, not real imagery.", ""]
    territory = report.territory
    if territory:
        out.append(f"Territory: {territory['name']} ({territory['area_km2']:,.0f} km², from "
                   f"`{territory['source']}`{', ' + territory['selection'] if territory['selection'] else ''}).")
    out += [f"Model {report.model_version}, threshold {report.threshold:.3f}; mining area = "
            f"{report.buffer_m:g} m buffer around each mine point, dissolved, in an equal-area CRS.",
            "", "## Table 1", "", "| | value |", "|---|---:|"]
    out += [f"| {label} | {_fmt(value, unit)} |" for _, label, value, unit in report.rows()]
    out += ["", "## Per year", "",
            "| year | predicted (bbox) | inside | confirmed | false positives found by review "
            "| not reviewed "
            "| mine points | mining area km² | in protected areas km² |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in report.per_year:
        out.append(f"| {f['year']} | {f['predicted_bbox']:,} | {f['predicted_inside']:,} | "
                   f"{f['confirmed']:,} | {f['false_positives']:,} | {f['unreviewed']:,} | "
                   f"{f['mine_points']:,} | {f['mining_area_km2']:,.1f} | "
                   f"{_fmt(f['protected_km2'], 'km²')} |")
    out += ["", f"## Trend over models and cycles ({report.year})", "",
            "| model | cycle | predicted mines inside the territory | its false positives found "
            "by review |", "|---|---:|---:|---:|"]
    for t in report.trend:
        out.append(f"| {t['model_version']} | {t['cycle'] or t['status'] or '–'} | "
                   f"{t['predicted']:,} | {_fmt(t['false_positives_found'])} |")
    if report.protected:
        out += ["", "## Protected areas", "", "| name | designation | mine points | mining area km² |",
                "|---|---|---:|---:|"]
        for r in report.protected.rows:
            out.append(f"| {r['name']} | {r['designation'] or ''} | {r['points']:,} | "
                       f"{r['mining_km2']:,.1f} |")
    change = report.change
    out += ["", f"## Change over {', '.join(map(str, change.years))} (rule: {change.rule})", ""]
    if change.note:
        out.append(change.note)
    else:
        out += ["| " + " | ".join(change.counts) + " |", "|" + "---:|" * len(change.counts),
                "| " + " | ".join(f"{v:,}" for v in change.counts.values()) + " |"]
    out += ["", f"## Abandoned-mine candidates for restoration ({len(change.candidates)})", ""]
    if change.candidates:
        out += ["| kind | cell | since | cells | history | review |", "|---|---:|---:|---:|---|---|"]
        for c in change.candidates:
            out.append(f"| {c['kind']} | {c['cell_id']} | {c['since'] or ''} | {c['cells']} | "
                       f"{' → '.join(map(str, c['history']))} | [open]({c['review_url']}) |")
    out += ["", "## Review of the labels (all years)", "", "| | labels |", "|---|---:|"]
    out += [f"| {REVIEW_STATE_NAMES[key]} | {report.review_states.get(key, 0):,} |"
            for key in REVIEW_STATES]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(out) + "\n"


def to_csv(report: Report) -> str:
    """The report's figures as a long CSV: section, metric, value, unit, year, model_version."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "metric", "value", "unit", "year", "model_version"])
    version = report.model_version
    for key, _, value, unit in report.rows():
        writer.writerow(["table1", key, "" if value is None else value, unit, report.year, version])
    for f in report.per_year:
        for key in ("predicted_bbox", "predicted_inside", "confirmed", "false_positives",
                    "unreviewed", "mine_points", "mining_area_km2", "protected_km2"):
            writer.writerow(["per_year", key, "" if f[key] is None else f[key],
                             "km²" if key.endswith("km2") else "cells", f["year"], version])
    for t in report.trend:
        writer.writerow(["trend", f"predicted_mines:{t['model_version']}", t["predicted"], "cells",
                         report.year, t["model_version"]])
        writer.writerow(["trend", f"false_positives_found:{t['model_version']}",
                         t["false_positives_found"], "cells", report.year, t["model_version"]])
    if report.protected:
        for r in report.protected.rows:
            writer.writerow(["protected", f"points:{r['name']}", r["points"], "points",
                             report.year, version])
            writer.writerow(["protected", f"mining_km2:{r['name']}", r["mining_km2"], "km²",
                             report.year, version])
    for name, count in report.change.counts.items():
        writer.writerow(["change", name, count, "cells", "", version])
    writer.writerow(["change", "restoration_candidates", len(report.change.candidates), "rows", "",
                     version])
    for key in REVIEW_STATES:
        writer.writerow(["review", key, report.review_states.get(key, 0), "labels", "", version])
    return buffer.getvalue()

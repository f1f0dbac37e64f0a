"""The recipe search as people read it in the ZenML dashboard and MLflow: each trial's validation score against
the time it ended, one colour per rung, the winner ringed, and the trials' table."""

from __future__ import annotations

from html import escape

from tuneline.evaluate.report import _STYLE, _table
from tuneline.train.search import Trial, TuningResult

HEADER = ["trial", "rung", "minutes", "rows", "eval loss", "seconds", "recipe"]  # the metric goes after rows
RUNG_COLOURS = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025")


def _recipe_text(recipe: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in recipe.items())


def trials_svg(result: TuningResult, width: int = 520, height: int = 220) -> str:
    """Score (y) against minutes since the search began (x), inline SVG so the dashboard shows it as it is."""
    pad, trials = 36, result.trials
    x_max = max(t.ended_s for t in trials) / 60 or 1.0
    low, high = min(t.score for t in trials), max(t.score for t in trials)
    span = (high - low) or 1.0

    def at(t: Trial) -> tuple[float, float]:
        return pad + t.ended_s / 60 / x_max * (width - 2 * pad), 10 + (1 - (t.score - low) / span) * (height - 40)

    dots = "".join(
        '<circle cx="{:.1f}" cy="{:.1f}" r="5"'.format(*at(t))
        + f' fill="{RUNG_COLOURS[t.rung % len(RUNG_COLOURS)]}" fill-opacity="0.8"><title>{escape(t.label)}: '
        f"{result.metric} {t.score:.3f} after {t.minutes:g} min ({t.rows} rows), {escape(_recipe_text(t.recipe))}"
        "</title></circle>"
        for t in trials
    )
    ring = '<circle cx="{:.1f}" cy="{:.1f}" r="9" fill="none" stroke="#000"/>'.format(*at(result.best))
    legend = "".join(
        f'<text x="{pad + 90 * k}" y="{height - 2}" font-size="11" fill="{RUNG_COLOURS[k % len(RUNG_COLOURS)]}">'
        f"rung {k}: {minutes:g} min</text>"
        for k, (_, minutes) in enumerate(result.rungs)
    )
    return (
        f'<svg width="{width}" height="{height}" font-family="sans-serif">'
        f'<rect x="{pad}" y="10" width="{width - 2 * pad}" height="{height - 40}" fill="none" stroke="#999"/>'
        f'<text x="2" y="18" font-size="11">{high:.2f}</text>'
        f'<text x="2" y="{height - 30}" font-size="11">{low:.2f}</text>'
        f'<text x="{width - pad - 4}" y="{height - 16}" font-size="11">{x_max:.1f}</text>'
        f'<text x="{width / 2 - 80}" y="{height - 16}" font-size="11">minutes since the search began</text>'
        f"{dots}{ring}{legend}</svg>"
    )


def trials_html(result: TuningResult) -> str:
    best = result.best
    rows = [
        [
            t.trial,
            t.rung,
            f"{t.minutes:g}",
            t.rows,
            f"<b>{t.score:.3f}</b>" if t is best else f"{t.score:.3f}",
            "-" if t.loss is None else f"{t.loss:.3f}",
            f"{t.seconds:.0f}",
            escape(_recipe_text(t.recipe)),
        ]
        for t in result.trials
    ]
    why = "".join(f"<li>{escape(w)}</li>" for w in result.why)
    return (
        f"<html><head>{_STYLE}</head><body><h2>Recipe search: {escape(result.metric)} {best.score:.3f}</h2>"
        f"<p>{len(result.trials)} trials in {result.search_seconds / 60:.1f} min of a "
        f"{result.budget_minutes:g} min budget. Winner: trial {best.trial} "
        f"({escape(_recipe_text(result.recipe))}).</p><ul>{why}</ul>{trials_svg(result)}"
        f"{_table(HEADER[:4] + [result.metric] + HEADER[4:], rows)}</body></html>"
    )

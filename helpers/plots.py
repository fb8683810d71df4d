"""Benchmark plots (matplotlib, no display needed): each is saved as a PNG and returned as a Figure.

Figures are built without ``pyplot`` (no GUI, no global state). In a Jupyter kernel each plot is
shown inline as a PNG when it is made, wherever the call sits in the cell, and only once in that
cell (returned as the cell's last expression it is not shown again; a later cell shows it anew).
Panel and figure titles wider than their space are wrapped. PNGs go to the default results
directory of :func:`helpers.results_dir.default_results_dir` (or to ``path=``). Inputs are the
DataFrames of :class:`helpers.bench.results.BenchResult` (``.summary`` and ``.requests``).

Example:
    >>> fig = plot_knee(result.summary, subtitle=result.subtitle(), name="sweep-t4")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from helpers.extras import require_extra

require_extra("bench", ["numpy", "pandas", "matplotlib"], needed_for="the plots (helpers.plots)")

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from helpers.loop import in_notebook
from helpers.results_dir import default_results_dir

PERCENTILE_STYLES = {"median": "-", "p90": "--", "p99": ":"}
METRIC_NAMES = {
    "ttft": "TTFT",
    "ttfa": "time to first answer token",
    "tpot": "TPOT",
    "itl": "ITL",
    "e2el": "end-to-end latency",
}
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
FAILED_COLOR = "#d62728"


INLINE_DPI = 90
SAVED_DPI = 110


class InlineFigure(Figure):
    """A matplotlib Figure that Jupyter shows as a PNG without pyplot, at most once per cell."""

    _shown_in_cell: int | None = None  # IPython's execution count when it was last shown

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=INLINE_DPI)
        return buffer.getvalue()

    def _ipython_display_(self) -> None:
        from IPython import get_ipython
        from IPython.display import display

        shell = get_ipython()
        cell = shell.execution_count if shell is not None else None
        if cell is not None and cell == self._shown_in_cell:
            return  # already shown by this cell (when it was made)
        self._shown_in_cell = cell
        display({"image/png": self._repr_png_(), "text/plain": repr(self)}, raw=True)


def plot_sync_vs_async(
    summary: pd.DataFrame,
    *,
    reference: Mapping[str, Mapping[str, float]] | None = None,
    subtitle: str = "",
    name: str = "sync-vs-async",
    path: str | Path | None = None,
) -> Figure:
    """Bars of total time and requests/s per run (``label`` column), with the speed-up over the first.

    ``reference`` adds hatched bars for published figures, e.g.
    ``{"blog sync (T4)": {"duration_s": 2.48, "request_throughput": 8.1}}``.
    """
    _require(summary, ["label", "duration_s", "request_throughput"])
    rows = [(row.label, row.duration_s, row.request_throughput, False) for row in summary.itertuples()]
    for label, values in (reference or {}).items():
        rows.append((label, values["duration_s"], values["request_throughput"], True))
    fig, (left, right) = _figure(2, "Sync vs async: same requests, same server", subtitle)
    labels = [r[0] for r in rows]
    positions = np.arange(len(rows))
    for ax, column, unit in ((left, 1, "total time (s)"), (right, 2, "requests per second")):
        values = [r[column] for r in rows]
        bars = ax.barh(positions, values, color=_colors(rows), edgecolor="black")
        for bar, row in zip(bars, rows, strict=True):
            if row[3]:
                bar.set_hatch("//")
                bar.set_alpha(0.55)
        texts = [f"{v:.2f}" for v in values]
        if column == 2:  # speed-up over the first bar of the same kind (measured or published)
            first_duration = {}
            for row in rows:
                first_duration.setdefault(row[3], row[1])
            texts = [f"{t}  ({first_duration[r[3]] / r[1]:.1f}x)" for t, r in zip(texts, rows, strict=True)]
        ax.bar_label(bars, labels=texts, padding=3)
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.margins(x=0.3)
        ax.grid(axis="x", alpha=0.3)
    left.set_title("total time (lower is better)")
    right.set_title("throughput\n(speed-up over the first run of its kind)")
    return _save(fig, name, path)


def plot_knee(
    summary: pd.DataFrame,
    *,
    x: str = "concurrency",
    ideal: pd.DataFrame | None = None,
    metrics: Sequence[str] = ("ttft", "itl"),
    percentiles: Sequence[str] = ("median", "p99"),
    subtitle: str = "",
    name: str = "knee",
    path: str | Path | None = None,
) -> Figure:
    """Throughput and latency percentiles against concurrency (or rate): where adding load stops paying.

    ``ideal`` (e.g. from :func:`helpers.bench.sweep.ideal_frame`) is drawn as a grey line: the
    simulator's own model, what a perfect client would measure.
    """
    _require(summary, [x, "output_throughput", "request_throughput"])
    data = summary.sort_values(x)
    fig, axes = _figure(1 + len(metrics), f"Throughput and latency against {x}", subtitle)
    throughput_ax = axes[0]
    throughput_ax.plot(data[x], data["output_throughput"], "o-", color=COLORS[0], label="measured")
    if ideal is not None:
        ideal = ideal.sort_values(x)
        throughput_ax.plot(
            ideal[x], ideal["output_throughput"], "s--", color="grey", label="ideal (sim model)"
        )
    throughput_ax.set_ylabel("output tokens per second")
    throughput_ax.set_title("output throughput")
    tokens_per_request = float((data["output_throughput"] / data["request_throughput"]).median())
    if np.isfinite(tokens_per_request) and tokens_per_request > 0:
        requests_axis = throughput_ax.secondary_yaxis(
            "right",
            functions=(lambda t: t / tokens_per_request, lambda r: r * tokens_per_request),
        )
        requests_axis.set_ylabel("requests per second")
    throughput_ax.legend(loc="upper left")
    for ax, metric in zip(axes[1:], metrics, strict=True):
        for i, percentile in enumerate(percentiles):
            column = f"{percentile}_{metric}_ms"
            if column in data:
                style = PERCENTILE_STYLES.get(percentile, "-")
                ax.plot(data[x], data[column], "o" + style, color=COLORS[1 + i], label=percentile)
        ideal_column = f"{metric}_ms"
        if ideal is not None and ideal_column in ideal:
            ax.plot(ideal[x], ideal[ideal_column], "s--", color="grey", label="ideal (sim model)")
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (ms)")
        ax.set_title(METRIC_NAMES.get(metric, metric))
        ax.legend()
    for ax in axes:
        _log2_axis(ax, data[x])
        ax.set_xlabel(_x_label(x))
        ax.grid(alpha=0.3)
    return _save(fig, name, path)


def plot_latency_cdf(
    requests: pd.DataFrame,
    *,
    metric: str = "latency_s",
    by: str = "label",
    subtitle: str = "",
    name: str = "latency-cdf",
    path: str | Path | None = None,
) -> Figure:
    """Cumulative distribution of a per-request latency (completed requests), one line per run."""
    _require(requests, [metric, by, "ok"])
    pretty = {"latency_s": "end-to-end latency", "ttft_s": "TTFT", "ttfa_s": "time to first answer"}
    title = pretty.get(metric, metric)
    fig, (ax,) = _figure(1, f"Distribution of {title}", subtitle)
    for i, (label, group) in enumerate(requests[requests["ok"]].groupby(by, sort=False)):
        values = np.sort(group[metric].dropna().to_numpy() * 1000)
        if values.size:
            fraction = np.arange(1, values.size + 1) / values.size
            ax.step(values, fraction, where="post", color=COLORS[i % len(COLORS)], label=str(label))
    ax.set_xlabel(f"{title} (ms)")
    ax.set_ylabel("fraction of requests at or below")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, name, path)


def plot_timeline(
    requests: pd.DataFrame,
    *,
    by: str = "label",
    subtitle: str = "",
    name: str = "timeline",
    path: str | Path | None = None,
) -> Figure:
    """One bar per request from send to last token: sync runs one after another, async overlaps.

    The darker part of a streamed request's bar is the wait for its first token (TTFT); failed
    requests are red.
    """
    _require(requests, [by, "start_s", "end_s", "ok"])
    groups = list(requests.groupby(by, sort=False))
    fig, axes = _figure(len(groups), "Request timeline", subtitle, vertical=True)
    end = requests["end_s"].max()
    has_ttft = "ttft_s" in requests and bool(requests["ttft_s"].notna().any())
    for i, (ax, (label, group)) in enumerate(zip(axes, groups, strict=True)):
        color = COLORS[i % len(COLORS)]
        rows = np.arange(len(group))
        colors = [color if ok else FAILED_COLOR for ok in group["ok"]]
        ax.barh(rows, group["end_s"] - group["start_s"], left=group["start_s"], color=colors)
        if has_ttft:
            ax.barh(rows, group["ttft_s"].fillna(0), left=group["start_s"], color="black", alpha=0.35)
        ax.set_xlim(0, end * 1.02)
        ax.invert_yaxis()
        ax.set_ylabel("request")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        duration = group["end_s"].max() - group["start_s"].min()
        ax.set_title(f"{label}: {len(group)} requests in {duration:.2f} s")
        ax.grid(axis="x", alpha=0.3)
    handles = []
    if has_ttft:
        handles.append(Patch(color="black", alpha=0.35, label="waiting for the first token (TTFT)"))
    if not requests["ok"].all():
        handles.append(Patch(color=FAILED_COLOR, label="failed request"))
    if handles:  # below the panels, where it covers no bar
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    axes[-1].set_xlabel("time since the run started (s)")
    return _save(fig, name, path)


def plot_ttft_vs_throughput(
    summary: pd.DataFrame,
    *,
    percentile: str = "median",
    annotate: str = "concurrency",
    subtitle: str = "",
    name: str = "ttft-vs-throughput",
    path: str | Path | None = None,
) -> Figure:
    """The price of throughput: TTFT against output tokens/s, each point labelled with its load."""
    column = f"{percentile}_ttft_ms"
    _require(summary, ["output_throughput", column])
    data = summary.sort_values("output_throughput")
    fig, (ax,) = _figure(1, "Time to first token against throughput", subtitle)
    ax.plot(data["output_throughput"], data[column], "o-", color=COLORS[0], label=f"{percentile} TTFT")
    if annotate in data:
        for row in data.itertuples():
            ax.annotate(
                f"{annotate}={getattr(row, annotate):g}",
                (row.output_throughput, getattr(row, column)),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("output tokens per second")
    ax.set_ylabel(f"{percentile} TTFT (ms)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, name, path)


def _figure(panels: int, title: str, subtitle: str, vertical: bool = False) -> tuple[Figure, list]:
    if vertical:
        fig = InlineFigure(figsize=(10, 1.2 + 2.6 * panels), layout="constrained")
        axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    else:
        fig = InlineFigure(figsize=(max(8.5, 5.2 * panels + 1), 4.6), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
    fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=12)
    return fig, list(axes)


def _save(fig: Figure, name: str, path: str | Path | None) -> Figure:
    """Fit the titles, write the PNG, and show the figure if this runs in a Jupyter kernel."""
    target = default_results_dir() / f"{name}.png" if path is None else Path(path)
    _wrap_wide_titles(fig)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=SAVED_DPI)
    if in_notebook():
        fig._ipython_display_()
    return fig


def _wrap_wide_titles(fig: Figure) -> None:
    """Wrap each panel title wider than its panel, and the figure title wider than the figure."""
    original_dpi = fig.get_dpi()
    canvas = FigureCanvasAgg(fig)
    for dpi in (INLINE_DPI, SAVED_DPI):  # text widths do not scale exactly with the dpi
        fig.set_dpi(dpi)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            _wrap_to(ax.title, ax.get_window_extent(renderer).width, renderer)
        if fig._suptitle is not None:
            _wrap_to(fig._suptitle, 0.96 * fig.bbox.width, renderer)
    fig.set_dpi(original_dpi)


def _wrap_to(text: Text, width: float, renderer) -> None:
    lines = text.get_text().split("\n")
    wrapped: list[str] = []
    for line in lines:
        line_width = _text_width(text, line, renderer)
        if line_width <= width or len(line) < 2:
            wrapped.append(line)
            continue
        columns = max(1, int(len(line) * width / line_width * 0.95))
        pieces = [line]
        while columns > 1:
            pieces = textwrap.wrap(line, columns, break_long_words=False) or [line]
            if all(_text_width(text, piece, renderer) <= width for piece in pieces):
                break
            columns -= max(1, columns // 10)
        wrapped.extend(pieces)
    text.set_text("\n".join(wrapped))


def _text_width(text: Text, content: str, renderer) -> float:
    original = text.get_text()
    text.set_text(content)
    width = text.get_window_extent(renderer).width
    text.set_text(original)
    return width


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(
            f"the DataFrame lacks column(s) {', '.join(missing)}; pass BenchResult.summary or "
            ".requests as documented"
        )
    if frame.empty:
        raise ValueError("nothing to plot: the DataFrame is empty")


def _log2_axis(ax: Axes, values: pd.Series) -> None:
    """Ticks at the measured points; a log-2 scale when they span a factor of 8 or more."""
    finite = values[np.isfinite(values.astype(float))]
    if finite.empty:
        return
    if len(finite) > 2 and finite.min() > 0 and finite.max() / finite.min() >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(finite, [f"{v:g}" for v in finite])


def _x_label(x: str) -> str:
    return {"concurrency": "concurrency (requests in flight)", "rate": "request rate (req/s)"}.get(x, x)


def _colors(rows: list) -> list[str]:
    return [COLORS[i % len(COLORS)] for i in range(len(rows))]

"""Every plot writes a readable PNG and returns its figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from helpers import plots
from helpers.bench.records import RequestRecord, RunResult
from helpers.bench.results import BenchResult


def sweep_result():
    runs = []
    for concurrency in (1, 2, 4, 8, 16):
        records = [
            RequestRecord(
                i,
                0.01 * i,
                0.01 * i + 0.5 + 0.01 * concurrency,
                streamed=True,
                ttft_s=0.02 * concurrency,
                itl_s=[0.005] * 9,
                output_tokens=10,
                prompt_tokens=20,
                ok=i != 3,
            )
            for i in range(12)
        ]
        runs.append(
            RunResult(
                records,
                duration_s=2.0 / concurrency,
                settings={"generator": "closed", "concurrency": concurrency},
            )
        )
    return BenchResult(runs, {"server_kind": "simulator", "sim_profile": "t4"})


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_plot_saves_a_png(tmp_path):
    result = sweep_result()
    summary, requests = result.summary, result.requests
    ideal = summary[["concurrency"]].assign(
        output_throughput=summary["concurrency"] * 20.0, ttft_ms=20.0, itl_ms=5.0
    )
    figures = {
        "bars": plots.plot_sync_vs_async(
            summary.iloc[[0, -1]],
            reference={"blog sync": {"duration_s": 2.48, "request_throughput": 8.1}},
            subtitle=result.subtitle(),
            path=tmp_path / "bars.png",
        ),
        "knee": plots.plot_knee(summary, ideal=ideal, subtitle=result.subtitle(), path=tmp_path / "knee.png"),
        "cdf": plots.plot_latency_cdf(requests, path=tmp_path / "cdf.png"),
        "timeline": plots.plot_timeline(
            requests[requests["run"].isin([0, 4])], path=tmp_path / "timeline.png"
        ),
        "ttft": plots.plot_ttft_vs_throughput(summary, path=tmp_path / "ttft.png"),
    }
    for name, figure in figures.items():
        assert isinstance(figure, Figure)
        assert is_png(tmp_path / f"{name}.png")
        assert figure.get_suptitle()
        for ax in figure.axes:
            if ax.get_label() != "<colorbar>" and ax.get_visible() and ax.has_data():
                assert ax.get_xlabel() or ax.get_ylabel()
    assert "profile t4" in figures["knee"].get_suptitle()


def test_default_path_is_under_results_dir_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_RESULTS_DIR", str(tmp_path))  # read when the plot is saved
    plots.plot_latency_cdf(sweep_result().requests, name="my-cdf")
    assert is_png(tmp_path / "my-cdf.png")


def test_wrong_frame_is_a_clear_error(tmp_path):
    result = sweep_result()
    with pytest.raises(ValueError, match=r"BenchResult\.summary"):
        plots.plot_knee(result.requests, path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_timeline(result.requests.iloc[:0], path=tmp_path / "x.png")


def test_figures_display_inline_without_pyplot(tmp_path):
    """Jupyter shows a PNG, not the text ``<Figure ...>``, with no ``%matplotlib inline``."""
    from IPython.core.formatters import PNGFormatter

    figure = plots.plot_latency_cdf(sweep_result().requests, path=tmp_path / "cdf.png")
    png = PNGFormatter()(figure)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def timeline_requests(ttft: bool, failed: bool):
    """A sequential staircase: request i runs from i to i + 1 s."""
    records = [
        RequestRecord(i, float(i), i + 1.0, ttft_s=0.3 if ttft else None, ok=not (failed and i == 5))
        for i in range(6)
    ]
    return BenchResult([RunResult(records, duration_s=6.0, settings={"generator": "serial"})]).requests


def legend_texts(figure) -> list[str]:
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes)]
    return [text.get_text() for legend in legends if legend is not None for text in legend.get_texts()]


@pytest.mark.parametrize(("ttft", "failed"), [(False, False), (True, False), (False, True), (True, True)])
def test_timeline_legend_lists_only_what_is_drawn_and_covers_no_bar(tmp_path, ttft, failed):
    figure = plots.plot_timeline(timeline_requests(ttft, failed), path=tmp_path / "t.png")
    texts = " | ".join(legend_texts(figure))
    assert ("TTFT" in texts) == ttft
    assert ("failed" in texts) == failed
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    for legend in [*figure.legends, *(ax.get_legend() for ax in figure.axes)]:
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers the plot"


def test_sync_vs_async_labels_each_bar_with_its_speed_up(tmp_path):
    summary = BenchResult(
        [
            RunResult([RequestRecord(0, 0.0, 2.0)], duration_s=2.0, settings={"generator": "serial"}),
            RunResult([RequestRecord(0, 0.0, 0.2)], duration_s=0.2, settings={"generator": "closed"}),
        ]
    ).summary
    reference = {
        "blog sync": {"duration_s": 2.48, "request_throughput": 8.1},
        "blog async": {"duration_s": 0.37, "request_throughput": 54.1},
    }
    figure = plots.plot_sync_vs_async(summary, reference=reference, path=tmp_path / "bars.png")
    labels = [text.get_text() for text in figure.axes[1].texts]
    assert labels == ["0.50  (1.0x)", "5.00  (10.0x)", "8.10  (1.0x)", "54.10  (6.7x)"]


@pytest.mark.server
def test_importing_plots_does_not_import_the_benchmark_engine():
    code = "import sys, helpers.plots; print(sorted(m for m in sys.modules if m.startswith('helpers.bench')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def panel_figures(tmp_path) -> dict:
    """Each plot with long labels and titles, as notebook 04 draws them."""
    result = sweep_result()
    summary = result.summary
    runs = summary.iloc[[0, 2, 4]].assign(
        label=["sync: invoke loop", "async: ainvoke x20", "async: lean aiohttp x20"]
    )
    subtitle = (
        "vLLM 0.32.0 · Qwen/Qwen3-0.6B · 2 CPU AMD EPYC 7B13 64-Core Processor · profile t4, time scale 1x"
    )
    reference = {
        "the blog, sync (T4)": {"duration_s": 2.48, "request_throughput": 8.1},
        "the blog, async (T4)": {"duration_s": 0.37, "request_throughput": 54.1},
    }
    return {
        "bars": plots.plot_sync_vs_async(
            runs, reference=reference, subtitle=subtitle, path=tmp_path / "b.png"
        ),
        "knee": plots.plot_knee(summary, subtitle=subtitle, path=tmp_path / "k.png"),
        "cdf": plots.plot_latency_cdf(result.requests, subtitle=subtitle, path=tmp_path / "c.png"),
        "ttft": plots.plot_ttft_vs_throughput(summary, subtitle=subtitle, path=tmp_path / "t.png"),
    }


@pytest.mark.parametrize("dpi", [90, 110])  # the inline PNG's and the saved PNG's
def test_titles_fit_their_panel_and_the_figure(tmp_path, dpi):
    for name, figure in panel_figures(tmp_path).items():
        figure.set_dpi(dpi)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        width = figure.bbox.width
        suptitle = figure.get_suptitle() and figure._suptitle.get_window_extent(renderer)
        assert suptitle.x0 >= 0 and suptitle.x1 <= width, f"{name}: the figure title is cut"
        for ax in figure.axes:
            title = ax.title.get_window_extent(renderer)
            panel = ax.get_window_extent(renderer)
            assert title.width <= panel.width + 1, f"{name}: {ax.get_title()!r} is wider than its panel"
            tight = ax.get_tightbbox(renderer)
            assert tight.x0 >= 0 and tight.x1 <= width, f"{name}: a panel's labels are cut"


PLOT_CELL_SHAPES = {
    "last expression": "plots.plot_latency_cdf(requests, path=PNG)",
    "assigned, then more code": "fig = plots.plot_latency_cdf(requests, path=PNG)\nx = 1",
    "followed by a call": "plots.plot_ttft_vs_throughput(summary, path=PNG)\nprint('saved')",
    "two plots in one cell": "plots.plot_knee(summary, path=PNG)\nplots.plot_latency_cdf(requests, path=PNG)",
    "shown again in a later cell": "fig",
    "display() on a plot": (
        "from IPython.display import display\ndisplay(plots.plot_latency_cdf(requests, path=PNG))"
    ),
}


@pytest.mark.server
def test_each_plot_is_shown_once_whatever_the_cell_shape(tmp_path):
    """In a real kernel: one PNG per plot made, also when the call is not the cell's last line."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    setup = (
        "from helpers import plots\nfrom tests.test_plots import sweep_result\n"
        f"PNG = {str(tmp_path / 'p.png')!r}\nresult = sweep_result()\n"
        "summary, requests = result.summary, result.requests"
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(setup)] + [
        nbformat.v4.new_code_cell(source) for source in PLOT_CELL_SHAPES.values()
    ]
    env_root = str(Path(__file__).resolve().parent.parent)
    NotebookClient(
        notebook, kernel_name="python3", timeout=240, resources={"metadata": {"path": env_root}}
    ).execute()
    shown = {
        shape: sum("image/png" in output.get("data", {}) for output in cell.outputs)
        for shape, cell in zip(PLOT_CELL_SHAPES, notebook.cells[1:], strict=True)
    }
    assert shown == {
        "last expression": 1,
        "assigned, then more code": 1,
        "followed by a call": 1,
        "two plots in one cell": 2,
        "shown again in a later cell": 1,
        "display() on a plot": 1,
    }

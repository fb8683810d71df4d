"""Every plot writes a readable PNG and returns its figure."""

from __future__ import annotations

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

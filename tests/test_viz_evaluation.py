"""Evaluation figures draw the aggregated tidy results: the plotted values are the seed means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from localign.viz.evaluation import plot_grounding, plot_label_fraction_curves, plot_metric_bars, plot_retrieval


def _rows(run, method, task, metric, values, fraction=1.0):
    return [dict(run=run, method=method, task=task, fraction=fraction, seed=s, metric=metric, value=v) for s, v in enumerate(values)]


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for f, (a, b) in {0.01: ((0.60, 0.62), (0.50, 0.52)), 0.1: ((0.70, 0.74), (0.55, 0.55)), 1.0: ((0.80, 0.84), (0.58, 0.60))}.items():
        rows += _rows("lovt", "lovt", "probe", "macro", a, f)
        rows += _rows("-", "random_init", "probe", "macro", b, f)
    rows += _rows("lovt", "lovt", "seg_linear:rsna", "dice", (0.40, 0.44))
    rows += _rows("-", "random_init", "seg_linear:rsna", "dice", (0.10, 0.12))
    for metric, value in {"i2t_R@1": 20.0, "i2t_R@5": 50.0, "i2t_R@10": 70.0, "t2i_R@1": 18.0, "t2i_R@5": 45.0,
                          "t2i_R@10": 66.0, "pool_size": 100.0}.items():
        rows += _rows("lovt", "lovt", "retrieval", metric, (value,))
    for metric, value in {"Pneumonia": 1.2, "Pneumonia/ci95": 0.2, "Cardiomegaly": 0.8, "overall": 1.0, "n_phrases": 10.0}.items():
        rows += _rows("lovt", "lovt", "grounding:ms_cxr", metric, (value,))
    return pd.DataFrame(rows)


def test_fraction_curves_plot_seed_means_in_percent(results):
    fig = plot_label_fraction_curves(results)
    assert isinstance(fig, Figure)
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}  # errorbar containers: (data line, caps, bars)
    assert set(lines) == {"lovt", "random_init"}
    np.testing.assert_allclose(lines["lovt"].get_ydata(), [61.0, 72.0, 82.0])
    np.testing.assert_allclose(lines["lovt"].get_xdata(), [1.0, 10.0, 100.0])
    np.testing.assert_allclose(lines["random_init"].get_ydata(), [51.0, 55.0, 59.0])


def test_metric_bars_heights_and_missing_metric_error(results):
    fig = plot_metric_bars(results, ["seg_linear:rsna"], "dice")
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    np.testing.assert_allclose(heights, [11.0, 42.0])
    with pytest.raises(ValueError, match="no results for tasks"):
        plot_metric_bars(results, ["seg_unet_frozen:rsna"], "dice")
    with pytest.raises(ValueError, match="at fraction 0.5"):
        plot_metric_bars(results, ["seg_linear:rsna"], "dice", fraction=0.5)


def test_retrieval_bars_and_chance_line(results):
    fig = plot_retrieval(results)
    i2t, t2i = fig.axes
    np.testing.assert_allclose([p.get_height() for p in i2t.patches], [20.0, 50.0, 70.0])
    np.testing.assert_allclose([p.get_height() for p in t2i.patches], [18.0, 45.0, 66.0])
    chance = [line for line in i2t.get_lines() if line.get_label().startswith("chance")]
    np.testing.assert_allclose(chance[0].get_ydata(), [1.0, 5.0, 10.0])


def test_grounding_bars_per_category_with_overall_last(results):
    fig = plot_grounding(results, "ms_cxr")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Cardiomegaly", "Pneumonia", "overall"]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.8, 1.2, 1.0])
    with pytest.raises(ValueError, match="grounding:synth_masks"):
        plot_grounding(results, "synth_masks")

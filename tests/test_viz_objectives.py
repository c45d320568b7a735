"""Figures of the objectives (localign.viz.objectives): they draw exactly the library's values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from localign.losses import double_softmax_attention, local_mi_objective, lovt_positive_weights, single_softmax_attention
from localign.viz.objectives import (
    MI_CURVE_COLUMNS,
    attention_on_patches,
    estimate_mi_curve,
    gaussian_mi,
    local_mi_region_terms,
    lovt_positive_summary,
    make_local_mi_example,
    make_word_region_example,
    plot_local_mi_selection,
    plot_lovt_positive_weights,
    plot_mi_curve,
    plot_word_region_attention,
    sample_correlated_gaussians,
)


def _image_axes(fig: Figure) -> dict[str, Axes]:
    """Axes that hold an image, by label."""
    return {ax.get_label(): ax for ax in fig.axes if ax.images}


def _drawn(ax: Axes) -> np.ndarray:
    assert len(ax.images) == 1
    return np.asarray(np.ma.getdata(ax.images[0].get_array()), dtype=np.float64)


# --- LoVT positive weights -----------------------------------------------------------------------


def test_positive_weights_figure_draws_the_library_matrix_and_rows() -> None:
    fig = plot_lovt_positive_weights((7, 7))
    assert isinstance(fig, Figure)
    panels = _image_axes(fig)
    assert sorted(panels) == sorted(
        f"{variant}/{panel}" for variant in ("smooth", "non-smooth") for panel in ("matrix", "3,3", "0,0")
    )
    assert len(fig.axes) == 7  # six panels and one shared colour bar
    for variant, smooth in (("smooth", True), ("non-smooth", False)):
        weights = lovt_positive_weights((7, 7), smooth=smooth).double().numpy()
        np.testing.assert_allclose(_drawn(panels[f"{variant}/matrix"]), weights, rtol=1e-6)
        np.testing.assert_allclose(_drawn(panels[f"{variant}/3,3"]), weights[24].reshape(7, 7), rtol=1e-6)
        np.testing.assert_allclose(_drawn(panels[f"{variant}/0,0"]), weights[0].reshape(7, 7), rtol=1e-6)
        # Exactly the non-positives are masked (drawn grey).
        corner = panels[f"{variant}/0,0"].images[0].get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(corner), weights[0].reshape(7, 7) == 0)
    assert "49 positives" in panels["smooth/3,3"].get_title()
    assert "22 positives" in panels["smooth/0,0"].get_title()


def test_positive_weights_figure_custom_anchors_and_errors() -> None:
    fig = plot_lovt_positive_weights((4, 6), anchors=[(1, 5)])
    panels = _image_axes(fig)
    assert sorted(panels) == ["non-smooth/1,5", "non-smooth/matrix", "smooth/1,5", "smooth/matrix"]
    np.testing.assert_allclose(_drawn(panels["smooth/1,5"]), lovt_positive_weights((4, 6))[11].reshape(4, 6).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"outside the 7×7 grid"):
        plot_lovt_positive_weights((7, 7), anchors=[(7, 0)])
    with pytest.raises(ValueError, match="grid must be"):
        plot_lovt_positive_weights((7, 0))


def test_positive_summary_matches_the_spec_facts() -> None:
    summary = lovt_positive_summary((7, 7)).set_index("anchor")
    assert summary.loc["3,3", "positives"] == 49 and summary.loc["0,0", "positives"] == 22
    # Farthest positive of the centre: a corner at sqrt(3² + 3²) cells, normalised by sqrt(7² + 7²).
    assert summary.loc["3,3", "min_weight"] == pytest.approx(math.exp(-math.sqrt(18) / math.sqrt(98)))
    assert (summary["max_weight"] == 1.0).all()
    assert (summary["positives"] == summary["positives_non_smooth"]).all()  # smoothing changes weights, not the set
    assert summary.loc["3,3", "region"] == 24 and summary.loc["0,0", "region"] == 0


# --- double-softmax attention --------------------------------------------------------------------


def test_word_region_attention_figure_draws_library_attention() -> None:
    example = make_word_region_example(grid=(7, 7), seed=1)
    assert example.words.shape == (4, 32) and example.regions.shape == (49, 32)
    fig = plot_word_region_attention(example, lam=4.0)
    panels = _image_axes(fig)
    assert len(panels) == 3 * len(example.labels)
    double = double_softmax_attention(example.words, example.regions, lam=4.0)[1]
    single = single_softmax_attention(example.words, example.regions, lam=4.0)[1]
    for t, label in enumerate(example.labels):
        np.testing.assert_allclose(_drawn(panels[f"{label}/double"]), double[t].reshape(7, 7).numpy(), rtol=1e-6)
        np.testing.assert_allclose(_drawn(panels[f"{label}/single"]), single[t].reshape(7, 7).numpy(), rtol=1e-6)
        # A lone query: the first softmax (over queries) is 1 everywhere, so attention is uniform.
        np.testing.assert_allclose(_drawn(panels[f"{label}/double_alone"]), np.full((7, 7), 1 / 49), rtol=1e-6)


def test_attention_shares_find_the_planted_boxes() -> None:
    example = make_word_region_example(seed=0)
    mask = example.patch_mask()
    assert mask.sum(dim=1).tolist() == [0, 4, 9, 4]  # [CLS] has no box
    shares = attention_on_patches(example)
    assert list(shares["word"]) == ["effusion", "cardiomegaly", "pneumothorax"]
    assert (shares["double"] > 2 * shares["uniform"]).all()
    assert (shares["single"] > 2 * shares["uniform"]).all()
    np.testing.assert_allclose(shares["double_alone"], shares["uniform"], rtol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        make_word_region_example(grid=(5, 5))  # the default boxes need a 7×7 grid


# --- local MI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["cpc", "mine"])
def test_region_terms_reproduce_the_local_objective(estimator: str) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 5, 6, 3, generator=gen)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    negative = torch.ones(5, 5, dtype=torch.bool)
    negative[0, 3] = negative[3, 0] = False  # two images of one study
    for negative_mask in (None, negative):
        estimate, argmax = local_mi_objective(scores, mask, estimator, negative_mask=negative_mask, return_argmax=True)
        terms = local_mi_region_terms(scores, mask, estimator, negative_mask=negative_mask)
        best, best_region = terms.max(dim=1)
        assert float((best * mask).sum(dim=1).mean()) == pytest.approx(float(estimate), abs=1e-5)
        assert torch.equal(best_region[mask], argmax[mask])
        assert bool((terms.permute(0, 2, 1)[~mask] == 0).all())
    with pytest.raises(ValueError, match="unknown estimator"):
        local_mi_region_terms(scores, mask, "nwj")


def test_local_mi_example_and_figure() -> None:
    example = make_local_mi_example(sentences_per_report=(3, 2, 3), grid=(4, 4), seed=0)
    # The example's premise: the distractor has the highest joint score, the MI picks the targets.
    for j, m in example.sentence_mask.nonzero().tolist():
        assert int(example.scores[j, j, :, m].argmax()) == example.distractor
    _, selected = local_mi_objective(example.scores, example.sentence_mask, "cpc", return_argmax=True)
    assert torch.equal(selected, example.targets)

    fig = plot_local_mi_selection(example, estimator="cpc")
    panels = _image_axes(fig)
    assert sorted(panels) == sorted(f"report {j}/sentence {m}" for j, m in example.sentence_mask.nonzero().tolist())
    terms = local_mi_region_terms(example.scores, example.sentence_mask, "cpc")
    for j, m in example.sentence_mask.nonzero().tolist():
        ax = panels[f"report {j}/sentence {m}"]
        np.testing.assert_allclose(_drawn(ax), terms[j, :, m].reshape(4, 4).numpy(), rtol=1e-6)
        star = [line for line in ax.lines if line.get_marker() == "*"]
        assert len(star) == 1
        pick = int(selected[j, m])
        assert (star[0].get_xdata()[0], star[0].get_ydata()[0]) == (pick % 4, pick // 4)
    assert sum(1 for ax in fig.axes if not ax.axison) == 1  # the padded slot of report 1


# --- MI bounds against the analytic MI -----------------------------------------------------------


def test_gaussian_mi_and_samples() -> None:
    assert gaussian_mi(0.8, 5) == pytest.approx(-2.5 * math.log(1 - 0.64))
    assert gaussian_mi(0.0, 3) == 0.0
    with pytest.raises(ValueError, match="rho"):
        gaussian_mi(1.0, 2)
    x, y = sample_correlated_gaussians(20000, 2, 0.6, torch.Generator().manual_seed(0))
    assert float(torch.corrcoef(torch.stack([x[:, 0], y[:, 0]]))[0, 1]) == pytest.approx(0.6, abs=0.02)
    assert float(y.std()) == pytest.approx(1.0, abs=0.02)


def test_estimate_mi_curve_tiny() -> None:
    threads = torch.get_num_threads()
    curve = estimate_mi_curve(rhos=(0.5, 0.95), batch_size=8, steps=15, seed=3, dim=3, hidden=(16,), eval_batches=3,
                              progress=False)
    assert torch.get_num_threads() == threads  # restored
    assert list(curve.columns) == list(MI_CURVE_COLUMNS)
    assert len(curve) == 4 and set(curve["estimator"]) == {"mine", "cpc"}
    np.testing.assert_allclose(curve["true_mi"], [gaussian_mi(r, 3) for r in curve["rho"]])
    assert (curve["log_batch"] == math.log(8)).all()
    cpc = curve[curve["estimator"] == "cpc"]
    assert (cpc["estimate"] <= math.log(8) + 1e-6).all()  # CPC can never exceed log B
    assert curve["estimate"].notna().all() and (curve["estimate_sd"] >= 0).all()
    again = estimate_mi_curve(rhos=(0.5, 0.95), batch_size=8, steps=15, seed=3, dim=3, hidden=(16,), eval_batches=3,
                              progress=False)
    pd.testing.assert_frame_equal(curve, again)  # seeded, independent of the global RNG


def test_estimate_mi_curve_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="estimators"):
        estimate_mi_curve(rhos=(0.5,), estimators=("nwj",), steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_mi_curve(rhos=(0.5,), batch_size=1, steps=0)
    with pytest.raises(ValueError, match="rho"):
        estimate_mi_curve(rhos=(0.5, 1.2), steps=0)


def test_mi_curve_figure_draws_truth_cap_and_estimates() -> None:
    curve = pd.DataFrame(
        [(rho, 4, gaussian_mi(rho, 4), est, 0.9 * gaussian_mi(rho, 4), 0.1, math.log(16), 16, 10)
         for rho in (0.2, 0.7, 0.9) for est in ("mine", "cpc")],
        columns=list(MI_CURVE_COLUMNS),
    )
    fig = plot_mi_curve(curve)
    assert len(fig.axes) == 1 and fig.axes[0].get_label() == "mi"
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    truth = lines["true MI"]
    np.testing.assert_allclose(truth.get_ydata(), -2 * np.log1p(-np.asarray(truth.get_xdata()) ** 2))
    np.testing.assert_allclose(lines["log B"].get_ydata(), [math.log(16)] * 2)
    containers = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    for name, estimator in (("MINE (Donsker–Varadhan)", "mine"), ("CPC (InfoNCE)", "cpc")):
        drawn = containers[name].lines[0]
        expected = curve[curve["estimator"] == estimator].sort_values("rho")
        np.testing.assert_allclose(drawn.get_xdata(), expected["rho"])
        np.testing.assert_allclose(drawn.get_ydata(), expected["estimate"])
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_mi_curve(curve.drop(columns="log_batch"))
    with pytest.raises(ValueError, match="batch_size"):
        plot_mi_curve(pd.concat([curve, curve.assign(batch_size=32)]))

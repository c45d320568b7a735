"""Figures of the analyses chapters: panels, labels and plotted values on tiny synthetic inputs (not pixels)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from localign.metrics.localization import mean_region_weight_map, word_weights
from localign.viz import grounding_figures as VG
from localign.viz import projection as P
from localign.viz import representations as VR
from localign.viz import weight_maps as VW


def _image(size=32):
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size**2 / 4))


# --------------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------------
def test_tsne_deterministic_shape_and_tiny_inputs():
    x = np.random.default_rng(0).normal(size=(30, 5))
    a = P.tsne(x, perplexity=5, seed=1)
    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, P.tsne(x, perplexity=5, seed=1))
    assert not np.allclose(a, P.tsne(x, perplexity=5, seed=2))
    with pytest.warns(UserWarning, match="perplexity 30 too high"):
        tiny = P.tsne(x[:5], perplexity=30)
    assert tiny.shape == (5, 2) and np.isfinite(tiny).all()
    with pytest.raises(ValueError, match="at least 4 points"):
        P.tsne(x[:3])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        P.tsne(x[:, 0])
    with pytest.raises(ValueError, match="NaN"):
        P.tsne(np.full((6, 2), np.nan))


def test_tsne_joint_splits_back_in_order():
    rng = np.random.default_rng(1)
    groups = {"regions": rng.normal(size=(8, 4)), "sentences": rng.normal(size=(3, 4))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = P.tsne_joint(groups, perplexity=3, seed=0)
    assert list(out) == ["regions", "sentences"]
    assert out["regions"].shape == (8, 2) and out["sentences"].shape == (3, 2)
    with pytest.raises(ValueError, match="same D"):
        P.tsne_joint({"a": np.zeros((4, 2)), "b": np.zeros((4, 3))})


# --------------------------------------------------------------------------------------------------
# representations chapter
# --------------------------------------------------------------------------------------------------
def test_std_bars_one_group_per_model_in_fig1_order():
    stds = pd.DataFrame({"total": [1.0, 0.9], "per_sample": [0.7, 0.95], "per_sample_sd": [0.05, 0.02],
                         "centroids": [0.7, 0.1], "global": [0.9, 0.05]}, index=["lovt", "lovt_no_global"])
    fig = VR.plot_std_bars(stds, sqrt_d=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lovt", "lovt_no_global"]
    labels = ax.get_legend_handles_labels()[1]
    assert len(labels) == 4 and labels[0].startswith("std of regions") and "centroids" in labels[2]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [1.0, 0.9, 0.7, 0.95, 0.7, 0.1, 0.9, 0.05])
    assert "√D" in ax.get_ylabel()
    with pytest.raises(ValueError, match="columns among"):
        VR.plot_std_bars(pd.DataFrame({"x": [1.0]}))


def test_alignment_histograms_panels_and_medians():
    d = {"lovt": {"report_to_image": [0.5, 1.0, 1.5], "image_to_report": [0.2, 0.4]},
         "lovt_no_global": {"report_to_image": [1.0, 1.2, 1.4]}}
    fig = VR.plot_alignment_histograms(d)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["lovt", "lovt_no_global"]
    assert fig.axes[0].get_xlim()[0] <= 0.0 and fig.axes[0].get_xlim()[1] >= 2.0
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("median 1.00" in s for s in labels) and any("median 0.30" in s for s in labels)
    with pytest.raises(ValueError, match="no models"):
        VR.plot_alignment_histograms({})


def test_tsne_scatter_by_kind_and_by_overlap():
    pts = np.arange(20, dtype=float).reshape(10, 2)
    kinds = ["regions"] * 4 + ["sentences"] * 3 + ["report_to_image"] * 2 + ["image_to_report"]
    fig = VR.plot_tsne_by_kind(pts, kinds)
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [4, 3, 2, 1]
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0].startswith("image regions") and labels[0].endswith("(4)")
    with pytest.raises(ValueError, match="10 labels"):
        VR.plot_tsne_by_kind(pts, kinds[:5])
    overlap = np.linspace(0, 1, 10)
    fig = VR.plot_tsne_by_overlap({"lovt": pts, "lovt_no_local": pts[::-1]}, overlap)
    assert len(fig.axes) == 3  # two panels and the colour bar
    assert fig.axes[0].get_title().startswith("lovt (9 of 10 regions overlap)")
    with pytest.raises(ValueError, match="overlap"):
        VR.plot_tsne_by_overlap({"lovt": pts}, overlap[:3])


def test_alignment_uniformity_points():
    m = pd.DataFrame({"alignment": [0.8, 1.1], "uniformity": [-3.0, -2.0]}, index=["lovt", "convirt"])
    fig = VR.plot_alignment_uniformity(m)
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    np.testing.assert_allclose(offsets, [[0.8, -3.0], [1.1, -2.0]])
    with pytest.raises(ValueError, match="uniformity"):
        VR.plot_alignment_uniformity(m[["alignment"]])


# --------------------------------------------------------------------------------------------------
# weight maps chapter
# --------------------------------------------------------------------------------------------------
def test_mean_weight_map_over_image():
    w = np.full((3, 4), 0.25)
    fig = VW.plot_mean_weight_map(_image(), mean_region_weight_map(w, (2, 2)))
    ax = fig.axes[0]
    images = ax.get_images()
    assert len(images) == 2 and images[1].get_array().shape == (32, 32)
    np.testing.assert_allclose(images[1].get_array(), 0.25)
    assert "1/4" in ax.get_title() and fig.axes[1].get_ylabel() == "mean region weight"


def test_weights_beside_findings_two_panels_on_one_grid():
    weights = np.array([[0.1, 0.4], [0.4, 0.1]])
    freq = np.array([[0.0, 0.5], [0.25, 0.0]])
    fig = VW.plot_weights_beside_findings(_image(), weights, freq)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2 and "1/4" in panels[0].get_title() and "findings" in panels[1].get_title()
    overlays = [ax.get_images()[1].get_array() for ax in panels]
    assert overlays[0].shape == (32, 32) and overlays[0].max() <= 0.4 + 1e-9 and overlays[1].max() <= 0.5 + 1e-9
    assert [ax.get_ylabel() for ax in fig.axes[2:]] == ["mean region weight", "share of images"]  # the colour bars
    with pytest.raises(ValueError, match="one grid"):
        VW.plot_weights_beside_findings(_image(), weights, np.zeros((3, 3)))


def test_chosen_region_box_and_mask_outline():
    mask = np.zeros((32, 32), bool)
    mask[16:, 16:] = True
    fig = VW.plot_chosen_region(_image(), 3, (2, 2), mask, title="Small effusion.")
    ax = fig.axes[0]
    rect = next(p for p in ax.patches if isinstance(p, Rectangle))
    assert rect.get_xy() == (15.5, 15.5) and rect.get_width() == 16  # cell 3 = bottom right
    assert "row 1, col 1" in ax.get_title() and "Small effusion." in ax.get_title()
    assert ax.collections  # the mask's outline
    assert "row 0, col 1" in VW.plot_chosen_region(_image(), 1, (2, 2)).axes[0].get_title()
    with pytest.raises(ValueError, match="differs from image shape"):
        VW.plot_chosen_region(_image(), 0, (2, 2), mask[:8])


def test_word_weights_figure_shades_every_word():
    words = "Small right pleural effusion .".split()
    wts = word_weights([0.1, 0.3, 0.4, 0.9, 0.0])
    fig = VW.plot_word_weights(words, wts, title="limitr")
    texts = [t for t in fig.texts if t.get_text() in words]
    assert [t.get_text() for t in texts] == words
    darkest = texts[3].get_bbox_patch().get_facecolor()
    lightest = texts[4].get_bbox_patch().get_facecolor()
    assert sum(darkest[:3]) < sum(lightest[:3])  # higher weight, darker shade
    assert any(t.get_text() == "limitr" for t in fig.texts)
    with pytest.raises(ValueError, match="one per word"):
        VW.plot_word_weights(words, wts[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VW.plot_word_weights(words[:2], [0.5, 2.0])
    # a long report wraps onto several lines
    long = VW.plot_word_weights(["opacity"] * 60, np.linspace(0, 1, 60), width=4.0)
    ys = {round(t.get_position()[1], 3) for t in long.texts if t.get_text() == "opacity"}
    assert len(ys) > 3


def test_selected_regions_one_panel_per_sentence_hit_colours():
    masks = np.zeros((3, 32, 32), bool)
    masks[0, :16, :16] = True  # cell 0 of a 2x2 grid
    masks[1, 16:, 16:] = True  # cell 3
    fig = VW.plot_selected_regions(_image(), ["a", "b", "no correlate"], [0, 1, 2], masks, (2, 2))
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 3
    rects = [next(p for p in ax.patches if isinstance(p, Rectangle)) for ax in panels]
    assert rects[0].get_edgecolor()[:3] == (1.0, 1.0, 1.0)  # hit: white
    assert rects[1].get_edgecolor()[:3] == (1.0, 0.0, 0.0)  # miss: red
    assert rects[1].get_xy() == (15.5, -0.5) and rects[1].get_width() == 16  # cell 1 = top right
    assert "[inside mask]" in panels[0].get_title() and "[no mask]" in panels[2].get_title()
    assert rects[2].get_edgecolor()[:3] != (1.0, 1.0, 1.0) and rects[2].get_linestyle() == "--"  # no mask: neither hit nor miss
    assert "1 of 2" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="selected/masks"):
        VW.plot_selected_regions(_image(), ["a"], [0, 1], masks, (2, 2))


def test_word_attention_panels_and_pointing_verdict():
    mask = np.zeros((32, 32), bool)
    mask[16:, :16] = True  # bottom-left cell of a 2x2 grid
    att = {"gloria": np.array([[0.0, 0.0], [1.0, 0.0]]), "limitr": np.array([[1.0, 0.0], [0.0, 0.0]])}
    fig = VW.plot_word_attention(_image(), "effusion", att, mask)
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert "ground truth" in titles[0]
    assert "gloria" in titles[1] and "max inside mask" in titles[1]
    assert "limitr" in titles[2] and "max outside mask" in titles[2]
    assert "peak 4.00× uniform" in titles[1]  # all the attention on one of 4 cells
    flat = VW.plot_word_attention(_image(), "effusion", {"gloria": np.full((2, 2), 0.25)}, mask)
    overlay = flat.axes[1].get_images()[1]
    assert overlay.get_clim() == (0.0, pytest.approx(0.25)) and "peak 1.00× uniform" in flat.axes[1].get_title()
    with pytest.raises(ValueError, match="differs from image shape"):
        VW.plot_word_attention(_image(), "effusion", att, mask[:8])


# --------------------------------------------------------------------------------------------------
# grounding chapter
# --------------------------------------------------------------------------------------------------
def test_grounding_panel_rows_columns_and_cnr_titles():
    img = _image()
    box = [[4, 4, 8, 8]]
    inside = np.zeros((32, 32))
    inside[4:12, 4:12] = 1.0
    inside += 0.01 * np.random.default_rng(0).normal(size=(32, 32))
    examples = [VG.GroundingExample("Pneumonia", "patchy opacity", img, box, {"lovt": inside, "convirt": -inside}, {"convirt": 0.5}),
                VG.GroundingExample("Edema", "perihilar haze", img, box, {"lovt": inside, "convirt": inside})]
    fig = VG.plot_grounding_examples(examples)
    assert len(fig.axes) == 6  # 2 rows × (image + 2 methods)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("Pneumonia") and "patchy opacity" in titles[0]
    cnr_lovt = VG.example_cnrs(examples[0])["lovt"]
    assert cnr_lovt > 10 and titles[1] == f"lovt\nCNR {cnr_lovt:.2f}"
    assert titles[2] == "convirt\nCNR 0.50"  # the given CNR is used as is
    assert sum(isinstance(p, Rectangle) for p in fig.axes[1].patches) == 1
    with pytest.raises(ValueError, match="no map for"):
        VG.plot_grounding_examples(examples, methods=["lovt", "gloria"])
    with pytest.raises(ValueError, match="examples: none"):
        VG.plot_grounding_examples([])

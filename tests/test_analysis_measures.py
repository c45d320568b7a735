"""Analysis measures (localign.metrics.representations / .localization) on hand-built inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from localign.metrics import localization as L
from localign.metrics import representations as R


# --------------------------------------------------------------------------------------------------
# standard deviations (LoVT Fig. 1)
# --------------------------------------------------------------------------------------------------
def test_global_std_known_value_and_collapse():
    # two unit vectors e1, e2: per channel values (1, 0) and (0, 1), std (ddof=1) = 1/sqrt(2) each
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert R.global_std(y) == pytest.approx(1 / math.sqrt(2))
    assert R.global_std(y, sqrt_d=True) == pytest.approx(1.0)
    # normalisation: scaling a vector does not change the normalised std
    assert R.global_std(np.array([[5.0, 0.0], [0.0, 0.1]])) == pytest.approx(1 / math.sqrt(2))
    assert R.global_std(np.array([[5.0, 0.0], [0.0, 0.1]]), normalize=False) == pytest.approx((5 / math.sqrt(2) + 0.1 / math.sqrt(2)) / 2)
    collapsed = np.tile([[0.3, -0.2, 0.9]], (6, 1)) * np.arange(1, 7)[:, None]  # same direction, other lengths
    assert R.global_std(collapsed) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        R.global_std(y[:1])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        R.global_std(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="zero vector"):
        R.global_std(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_region_std_collapsed_between_samples_has_zero_centroid_std():
    rng = np.random.default_rng(0)
    regions = rng.normal(size=(5, 8))  # the same 5 regions in every sample
    y = np.broadcast_to(regions, (4, 5, 8)).copy()
    s = R.region_std(y)
    assert s["centroids"] == pytest.approx(0.0, abs=1e-12)
    assert s["per_sample"] > 0.1
    # total^2 = centroid var + mean within var per channel; with zero centroid var, total = mean_c sqrt(v_c)
    assert s["total"] == pytest.approx(s["per_sample"])
    assert s["per_sample_sd"] == pytest.approx(0.0, abs=1e-12)


def test_region_std_collapsed_within_samples_has_zero_per_sample_std():
    y = np.stack([np.tile([[1.0, 0.0]], (3, 1)), np.tile([[0.0, 1.0]], (3, 1))])  # [2, 3, 2], constant per sample
    s = R.region_std(y)
    assert s["per_sample"] == pytest.approx(0.0)
    assert s["centroids"] == pytest.approx(1 / math.sqrt(2))  # centroids e1, e2 as in the global case
    assert s["total"] == pytest.approx(s["centroids"])


def test_region_std_hand_computed_with_mask():
    # sample 0: regions e1, e2 (valid), padding garbage; sample 1: e1, e1, e1
    y = np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
                  [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = np.array([[True, True, False], [True, True, True]])
    s = R.region_std(y, mask)
    # sample 0: mu = (0.5, 0.5), v = (0.5, 0.5) (ddof=1 over 2); sample 1: mu = (1, 0), v = 0
    v0 = 0.5
    c = np.var([[0.5, 0.5], [1.0, 0.0]], axis=0, ddof=1)  # (0.125, 0.125)
    assert s["per_sample"] == pytest.approx((math.sqrt(v0) + 0.0) / 2)
    assert s["centroids"] == pytest.approx(np.sqrt(c).mean())
    assert s["total"] == pytest.approx(np.sqrt(c + np.array([v0 / 2, v0 / 2])).mean())
    assert s["per_sample_sd"] == pytest.approx(np.std([math.sqrt(v0), 0.0], ddof=1))
    # the padded garbage is ignored: changing it changes nothing
    y2 = y.copy()
    y2[0, 2] = [-3.0, 100.0]
    assert R.region_std(y2, mask) == pytest.approx(s)
    # torch input gives the same
    assert R.region_std(torch.tensor(y), torch.tensor(mask)) == pytest.approx(s)
    assert R.region_std(y, mask, sqrt_d=True)["total"] == pytest.approx(s["total"] * math.sqrt(2))


def test_region_std_errors():
    y = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"mask: expected \[N, K\]"):
        R.region_std(y, np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="no valid region"):
        R.region_std(y, np.array([[True, True, True], [False, False, False]]))
    with pytest.raises(ValueError, match="N >= 2"):
        R.region_std(y[:1])
    with pytest.raises(ValueError, match=r"\[N, K, D\]"):
        R.region_std(np.ones((2, 3)))


# --------------------------------------------------------------------------------------------------
# alignment distances (LoVT Fig. 2), Wang & Isola
# --------------------------------------------------------------------------------------------------
def test_alignment_distances_known_values_and_mask():
    z = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    att = np.array([[[3.0, 0.0], [1.0, 0.0], [-1.0, -1.0]]])  # same dir, orthogonal, antipodal
    d = R.alignment_distances(z, att)
    np.testing.assert_allclose(d, [0.0, math.sqrt(2), 2.0], atol=1e-12)
    d = R.alignment_distances(z, att, mask=np.array([[True, False, True]]))
    np.testing.assert_allclose(d, [0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(R.alignment_distances(z, att, normalize=False), [2.0, math.sqrt(2), math.sqrt(8)])
    with pytest.raises(ValueError, match="differs from z shape"):
        R.alignment_distances(z, att[:, :2])


def test_wang_isola_alignment_and_uniformity():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4))
    assert R.wang_isola_alignment(x, 2 * x) == pytest.approx(0.0, abs=1e-12)  # identical directions
    assert R.wang_isola_alignment(x, -x) == pytest.approx(4.0)  # antipodal: ||u - (-u)||^2 = 4
    assert R.wang_isola_alignment(x, -x, alpha=1) == pytest.approx(2.0)
    # planted set: e1, e2, -e1 on the circle; squared distances 2, 4, 2 over the 3 distinct pairs
    planted = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = math.log((math.exp(-2 * 2) + math.exp(-2 * 4) + math.exp(-2 * 2)) / 3)
    assert R.wang_isola_uniformity(planted) == pytest.approx(expected)
    assert R.wang_isola_uniformity(planted, t=1) == pytest.approx(math.log((2 * math.exp(-2) + math.exp(-4)) / 3))
    assert R.wang_isola_uniformity(np.tile([[0.0, 2.0]], (5, 1))) == pytest.approx(0.0)  # collapsed
    with pytest.raises(ValueError, match="N >= 2"):
        R.wang_isola_uniformity(planted[:1])
    with pytest.raises(ValueError, match="differs from x shape"):
        R.wang_isola_alignment(x, x[:3])


def test_local_uniformity_per_sample_with_mask():
    z = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
                  [[1.0, 0.0], [5.0, 5.0], [0.0, 0.0]]])
    mask = np.array([[True, True, True], [True, False, False]])
    u = R.local_uniformity(z, mask)
    assert u[0] == pytest.approx(R.wang_isola_uniformity(z[0]))
    assert np.isnan(u[1])  # one valid sentence: no pair


# --------------------------------------------------------------------------------------------------
# region cells, inside-mask rule, hit rates
# --------------------------------------------------------------------------------------------------
def test_region_overlap_and_inside_rule():
    m = np.zeros((8, 8), bool)
    m[0:4, 0:6] = True  # top-left cell full, top-right cell half covered
    np.testing.assert_allclose(L.region_overlap(m, (2, 2)), [[1.0, 0.5], [0.0, 0.0]])
    np.testing.assert_array_equal(L.region_inside_mask(m, (2, 2)), [[True, True], [False, False]])
    np.testing.assert_array_equal(L.region_inside_mask(m, (2, 2), threshold=0.75), [[True, False], [False, False]])
    # a tiny mask (one pixel) still has its best cell inside, unless include_best=False
    tiny = np.zeros((8, 8), bool)
    tiny[6, 1] = True
    np.testing.assert_array_equal(L.region_inside_mask(tiny, (2, 2)), [[False, False], [True, False]])
    assert not L.region_inside_mask(tiny, (2, 2), include_best=False).any()
    # uneven tiling: 5 pixel rows on 2 grid rows -> rows 0-2 to cell 0, rows 3-4 to cell 1
    uneven = np.zeros((5, 2), bool)
    uneven[3:, :] = True
    np.testing.assert_allclose(L.region_overlap(uneven, (2, 1)), [[0.0], [1.0]])
    assert L.cell_box(1, (2, 1), (5, 2)) == (0.0, 3.0, 2.0, 2.0)
    assert L.cell_box(3, (2, 2), (8, 8)) == (4.0, 4.0, 4.0, 4.0)
    with pytest.raises(ValueError, match="empty"):
        L.region_inside_mask(np.zeros((8, 8), bool), (2, 2))
    with pytest.raises(ValueError, match="cannot be tiled"):
        L.region_overlap(np.ones((2, 2), bool), (4, 4))


def _planted(grid=(2, 2), size=8):
    """Two samples, two sentences each; sentence (i, m) mask = one grid cell."""
    masks = np.zeros((2, 2, size, size), bool)
    half = size // 2
    masks[0, 0, :half, :half] = True  # cell 0
    masks[0, 1, half:, half:] = True  # cell 3
    masks[1, 0, :half, half:] = True  # cell 1
    # (1, 1): no image correlate (empty mask)
    return masks


def test_nearest_region_selected_when_sentence_equals_region():
    rng = np.random.default_rng(2)
    regions = rng.normal(size=(2, 4, 6))
    sentences = np.stack([regions[0, [0, 2]], regions[1, [1, 1]]])  # sentence = a region's embedding
    np.testing.assert_array_equal(R.nearest_regions(sentences, regions), [[0, 2], [1, 1]])
    # masking the chosen region moves the choice elsewhere
    rmask = np.ones((2, 4), bool)
    rmask[0, 0] = False
    assert R.nearest_regions(sentences, regions, rmask)[0, 0] != 0


def test_sentence_region_hit_rate_planted():
    rng = np.random.default_rng(3)
    regions = rng.normal(size=(2, 4, 6))
    masks = _planted()
    # sentence (0,0) -> region 0 (inside cell 0: hit), (0,1) -> region 1 (mask is cell 3: miss),
    # (1,0) -> region 1 (hit), (1,1) has no mask: not scored
    sentences = np.stack([regions[0, [0, 1]], regions[1, [1, 2]]])
    out = R.sentence_region_hit_rate(sentences, regions, masks, (2, 2))
    np.testing.assert_array_equal(out["selected"], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(out["hits"], [[True, False], [True, False]])
    np.testing.assert_array_equal(out["scored"], [[True, True], [True, False]])
    assert out["n_scored"] == 3 and out["n_hits"] == 2 and out["rate"] == pytest.approx(2 / 3)
    assert out["chance"] == pytest.approx(1 / 4)  # one inside cell out of four for every scored sentence
    # the sentence mask removes a sentence from scoring
    out = R.sentence_region_hit_rate(sentences, regions, masks, (2, 2), sentence_mask=[[True, False], [True, True]])
    assert out["n_scored"] == 2 and out["rate"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differs from the grid"):
        R.sentence_region_hit_rate(sentences, regions, masks, (3, 3))
    with pytest.raises(ValueError, match=r"masks: expected \[N, M, H, W\]"):
        R.sentence_region_hit_rate(sentences, regions, masks[:, :1], (2, 2))


# --------------------------------------------------------------------------------------------------
# local MI's region selection
# --------------------------------------------------------------------------------------------------
def test_select_regions_max_ties_masks_and_hit_rate():
    scores = np.array([[0.1, 0.9, 0.3, 0.2],
                       [0.5, 0.5, 0.1, 0.0]])  # sentence 1: tie between regions 0 and 1 -> 0
    np.testing.assert_array_equal(L.select_regions_max(scores), [1, 0])
    np.testing.assert_array_equal(L.select_regions_max(scores, region_mask=[True, False, True, True]), [2, 0])
    batched = np.stack([scores, scores[::-1]])
    np.testing.assert_array_equal(L.select_regions_max(batched), [[1, 0], [0, 1]])
    # NaN at a masked region is ignored, at a valid one it raises
    s = scores.copy()
    s[0, 3] = np.nan
    np.testing.assert_array_equal(L.select_regions_max(s, [True, True, True, False]), [1, 0])
    with pytest.raises(ValueError, match="non-finite"):
        L.select_regions_max(s)
    with pytest.raises(ValueError, match="no valid region"):
        L.select_regions_max(scores, [False] * 4)
    # hit rate of the selection against planted masks
    selected = np.array([[0, 3], [2, 0]])
    out = L.region_hits(selected, _planted(), (2, 2))
    np.testing.assert_array_equal(out["hits"], [[True, True], [False, False]])
    assert out["rate"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="must lie in"):
        L.region_hits(np.array([[0, 4], [1, 0]]), _planted(), (2, 2))


# --------------------------------------------------------------------------------------------------
# pointing game
# --------------------------------------------------------------------------------------------------
def test_pointing_game_hit_miss_ties_and_nan():
    box = np.zeros((6, 6), bool)
    box[1:3, 1:3] = True
    m = np.zeros((6, 6))
    m[2, 2] = 1.0
    assert L.pointing_game(m, box) == 1.0
    moved = np.roll(m, 3, axis=1)  # peak at (2, 5): outside the box
    assert L.pointing_game(moved, box) == 0.0
    assert L.pointing_accuracy([m, moved], [box, box]) == 0.5
    # ties: two maxima, one inside
    tie = m.copy()
    tie[5, 5] = 1.0
    assert L.pointing_game(tie, box) == 0.0
    assert L.pointing_game(tie, box, ties="expected") == 0.5
    # a constant map is a miss unless the target covers every pixel
    assert L.pointing_game(np.ones((6, 6)), box) == 0.0
    assert L.pointing_game(np.ones((6, 6)), np.ones((6, 6), bool)) == 1.0
    # NaN (outside the field of view) is ignored even where it would be larger
    nan_map = moved.copy()
    nan_map[2, 5] = np.nan
    nan_map[1, 1] = 0.5
    assert L.pointing_game(nan_map, box) == 1.0
    with pytest.raises(ValueError, match="every pixel is NaN"):
        L.pointing_game(np.full((6, 6), np.nan), box)
    with pytest.raises(ValueError, match="differs from heatmap shape"):
        L.pointing_game(m, box[:5])
    with pytest.raises(ValueError, match="empty"):
        L.pointing_game(m, np.zeros((6, 6), bool))
    with pytest.raises(ValueError, match="ties"):
        L.pointing_game(m, box, ties="optimistic")


# --------------------------------------------------------------------------------------------------
# weight maps and word weights
# --------------------------------------------------------------------------------------------------
def test_mean_region_weight_map_known_weights_and_mask():
    w = np.array([[0.7, 0.1, 0.1, 0.1],
                  [0.1, 0.1, 0.1, 0.7]])
    mean = L.mean_region_weight_map(w, (2, 2))
    np.testing.assert_allclose(mean, [[0.4, 0.1], [0.1, 0.4]])
    assert mean.sum() == pytest.approx(1.0)
    masked = L.mean_region_weight_map(w, (2, 2), mask=[[True, True, True, True], [False, True, True, True]])
    np.testing.assert_allclose(masked, [[0.7, 0.1], [0.1, 0.4]])
    up = L.mean_region_weight_map(w, (2, 2), image_size=(8, 8), mode="nearest")
    assert up.shape == (8, 8)
    np.testing.assert_allclose(up[:4, :4], 0.4)
    np.testing.assert_allclose(up[:4, 4:], 0.1)
    bil = L.mean_region_weight_map(w, (2, 2), image_size=(8, 8))
    assert bil.mean() == pytest.approx(0.25) and bil[0, 0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="K = 2×2 = 4"):
        L.mean_region_weight_map(w[:, :3], (2, 2))
    with pytest.raises(ValueError, match="masked in every sample"):
        L.mean_region_weight_map(w, (2, 2), mask=[[False, True, True, True]] * 2, image_size=(8, 8))
    np.testing.assert_allclose(L.mean_image(np.stack([np.zeros((3, 3)), np.ones((3, 3))])), 0.5)


def test_word_weights_pieces_specials_and_norms():
    q = np.array([0.0, 0.2, 0.1, 0.5, 0.2, 0.0])  # [CLS] w0 w1(piece 1) w1(piece 2) w2 [SEP]
    ids = np.array([-1, 0, 1, 1, 2, -1])
    np.testing.assert_allclose(L.word_weights(q, ids), [0.2 / 0.6, 1.0, 0.2 / 0.6])
    np.testing.assert_allclose(L.word_weights(q, ids, norm="sum"), [0.2, 0.6, 0.2])
    np.testing.assert_allclose(L.word_weights([1.0, 3.0]), [1 / 3, 1.0])
    with pytest.raises(ValueError, match="negative"):
        L.word_weights([-0.1, 1.0])
    with pytest.raises(ValueError, match="has no token"):
        L.word_weights([0.5, 0.5], [0, 2])
    with pytest.raises(ValueError, match="word_ids"):
        L.word_weights([0.5, 0.5], [0])

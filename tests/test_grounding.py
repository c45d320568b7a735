"""Known-answer tests for the phrase-grounding pipeline and CNR (localign.eval.grounding)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from localign.eval import (
    ImageGeometry,
    aggregate_cnr,
    boxes_to_mask,
    cnr,
    grounding_cnr,
    map_to_original,
    patch_similarity,
    smooth_similarity,
    square_padding,
)


# --------------------------------------------------------------------------------------------------
# CNR
# --------------------------------------------------------------------------------------------------
def _two_region_map(a: float, delta: float, b: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """10×10 map: a ± delta (alternating) on a 4×4 region, b ± eps (alternating) elsewhere."""
    checker = np.where((np.add.outer(np.arange(10), np.arange(10)) % 2) == 0, 1.0, -1.0)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 3:7] = True
    m = np.where(mask, a + delta * checker, b + eps * checker)
    return m, mask


def test_cnr_closed_form():
    # inside: 8 × (1.5) and 8 × (0.5): mean 1, population variance 0.25
    # outside: 42 × (+0.3) and 42 × (−0.3): mean 0, population variance 0.09
    m, mask = _two_region_map(1.0, 0.5, 0.0, 0.3)
    assert (mask.sum(), (m[~mask] > 0).sum(), (m[~mask] < 0).sum()) == (16, 42, 42)
    assert cnr(m, mask) == pytest.approx(1.0 / math.sqrt(0.25 + 0.09))
    # the absolute value: swapping the roles of the regions gives the same CNR
    assert cnr(m, ~mask) == pytest.approx(1.0 / math.sqrt(0.34))


def test_cnr_excludes_nan_margin():
    m, mask = _two_region_map(1.0, 0.5, 0.0, 0.5)
    padded = np.full((10, 16), np.nan)
    padded[:, 3:13] = m
    padded_mask = np.zeros((10, 16), dtype=bool)
    padded_mask[:, 3:13] = mask
    padded_mask[0, 0] = True  # a NaN pixel inside the region is excluded too
    assert cnr(padded, padded_mask) == pytest.approx(math.sqrt(2.0))
    assert cnr(padded, padded_mask) == pytest.approx(cnr(m, mask))


def test_cnr_affine_invariance():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(32, 40))
    mask = boxes_to_mask([[5, 7, 10, 12]], 32, 40)
    m[mask] += 1.0
    ref = cnr(m, mask)
    for a, b in ((2.0, 0.0), (-3.0, 7.0), (0.01, -1.0)):
        assert cnr(a * m + b, mask) == pytest.approx(ref, rel=1e-10)


def test_cnr_union_of_overlapping_boxes():
    mask = boxes_to_mask([[1, 1, 3, 3], [2, 2, 3, 3]], 8, 8)
    assert mask.sum() == 9 + 9 - 4
    m = np.zeros((8, 8))
    m[mask] = 1.0
    m[0, :] = 0.5  # some noise outside
    ours = cnr(m, mask)
    # a per-box average would treat the other box's pixels as "outside" and get a lower CNR
    per_box = np.mean([cnr(m, boxes_to_mask([b], 8, 8)) for b in ([1, 1, 3, 3], [2, 2, 3, 3])])
    assert ours > per_box
    outside = np.r_[np.full(8, 0.5), np.zeros(64 - 14 - 8)]  # 50 pixels: row 0 plus zeros
    assert ours == pytest.approx((1.0 - outside.mean()) / math.sqrt(0.0 + outside.var()))
    assert outside.mean() == pytest.approx(0.08)


def test_cnr_errors_and_undefined(caplog):
    m = np.zeros((4, 4))
    with pytest.raises(ValueError, match="inside the region"):
        cnr(m, np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="outside the region"):
        cnr(m, np.ones((4, 4), dtype=bool))
    nan_inside = m.copy()
    nan_inside[:2, :2] = np.nan
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2, :2] = True
    with pytest.raises(ValueError, match="inside the region"):
        cnr(nan_inside, mask)
    with pytest.raises(ValueError, match="differs"):
        cnr(m, np.zeros((3, 4), dtype=bool))
    with caplog.at_level(logging.WARNING, logger="localign.eval.grounding"):
        assert math.isnan(cnr(np.full((4, 4), 0.2), mask))  # 0/0; np.var of it is ~1e-33, not 0
        two_constants = np.where(mask, 0.7, 0.2)
        assert math.isnan(cnr(two_constants, mask))  # c/0
        # round-off of a constant map after bilinear interpolation must not give a finite CNR
        const = map_to_original(np.full((7, 7), 0.3), (50, 70), ImageGeometry("resize", size=224))
        assert math.isnan(cnr(const, boxes_to_mask([[10, 10, 20, 20]], 50, 70)))
    assert "undefined" in caplog.text


def test_boxes_to_mask_conventions():
    mask = boxes_to_mask([[2, 1, 3, 2]], 5, 6)  # x=2, y=1, w=3, h=2
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)
    # clipping at the borders
    clipped = boxes_to_mask(np.array([[-2, -2, 4, 4]]), 5, 5)
    assert clipped.sum() == 4 and clipped[:2, :2].all()
    # fractional boxes: pixel centres 0.5 and 1.5 lie in [0.4, 1.6), 2.5 does not
    frac = boxes_to_mask([0.4, 0.0, 1.2, 1.0], 3, 4)
    np.testing.assert_array_equal(frac[0], [True, True, False, False])
    assert frac[1:].sum() == 0
    with pytest.raises(ValueError, match="covers no pixel"):
        boxes_to_mask([[10, 10, 2, 2]], 5, 5)
    with pytest.raises(ValueError, match="negative"):
        boxes_to_mask([[1, 1, -2, 2]], 5, 5)
    with pytest.raises(ValueError, match="B >= 1"):
        boxes_to_mask(np.zeros((0, 4)), 5, 5)


# --------------------------------------------------------------------------------------------------
# similarity and smoothing
# --------------------------------------------------------------------------------------------------
def test_patch_similarity_cosine_and_layouts():
    p = np.array([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 3.0], [-1.0, 0.0]]])  # [2, 2, 2]
    t = np.array([1.0, 1.0])
    expected = np.array([[1 / math.sqrt(2), 1 / math.sqrt(2)], [1.0, -1 / math.sqrt(2)]])
    np.testing.assert_allclose(patch_similarity(p, t), expected)
    np.testing.assert_allclose(patch_similarity(torch.tensor(p).reshape(4, 2), torch.tensor(5 * t), grid=(2, 2)), expected)
    with pytest.raises(ValueError, match="grid"):
        patch_similarity(p.reshape(4, 2), t)
    with pytest.raises(ValueError, match="zero vector"):
        patch_similarity(np.zeros((2, 2, 2)), t)
    with pytest.raises(ValueError, match="dimension"):
        patch_similarity(p, np.ones(3))


def test_smooth_similarity_gaussian_weights():
    delta = np.zeros((15, 15))
    delta[7, 7] = 1.0
    s = smooth_similarity(delta, sigma=1.5)
    k = np.arange(-6, 7)  # radius = int(4 * 1.5 + 0.5) = 6
    w = np.exp(-(k**2) / (2 * 1.5**2))
    w /= w.sum()
    assert s[7, 7] == pytest.approx(w[6] ** 2)
    assert s[7, 8] == pytest.approx(w[6] * w[7])
    assert s.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(smooth_similarity(np.full((5, 5), 0.3)), 0.3)  # reflect keeps constants
    np.testing.assert_array_equal(smooth_similarity(delta, sigma=0), delta)


# --------------------------------------------------------------------------------------------------
# back to the original pixels
# --------------------------------------------------------------------------------------------------
def _hot(h: int, w: int, r: int, c: int) -> np.ndarray:
    m = np.zeros((h, w))
    m[r, c] = 1.0
    return m


def test_square_padding_splits_odd_differences():
    assert square_padding(100, 67) == (0, 0, 16, 17)
    assert square_padding(60, 100) == (20, 20, 0, 0)


def test_pad_resize_hot_patch_lands_on_original_pixels():
    # 280 × 140 image -> padded to 280² (70 columns each side) -> 7×7 patches of 40 px
    geometry = ImageGeometry(mode="pad_resize", size=224)
    out = map_to_original(_hot(7, 7, 2, 3), (280, 140), geometry, interpolation="nearest")
    assert out.shape == (280, 140) and not np.isnan(out).any()
    rows, cols = np.nonzero(out == 1.0)
    assert (rows.min(), rows.max()) == (80, 119)
    assert (cols.min(), cols.max()) == (120 - 70, 159 - 70)
    assert out.sum() == 40 * 40
    # a hot patch over the padding does not appear at all
    assert map_to_original(_hot(7, 7, 3, 0), (280, 140), geometry, interpolation="nearest").sum() == 0


def test_pad_resize_with_crop_nan_margins():
    # GLoRIA/LIMITR: longer side 256, zero-pad, centre crop 224. For a 200 × 256 image the crop
    # removes 16 columns on each side (seen as NaN); rows: the crop starts 12 px above the image.
    geometry = ImageGeometry(mode="pad_resize", size=256, crop=224)
    assert geometry.visible_window((200, 256)) == (-12, 16, 224, 224)
    out = map_to_original(_hot(7, 7, 0, 0), (200, 256), geometry, interpolation="nearest")
    nan_cols = np.isnan(out).all(axis=0)
    np.testing.assert_array_equal(np.nonzero(nan_cols)[0], np.r_[0:16, 240:256])
    assert not np.isnan(out[:, 16:240]).any()
    rows, cols = np.nonzero(out == 1.0)  # patch (0, 0) = window rows -12..19, cols 16..47
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 19, 16, 47)


@pytest.mark.parametrize("width, left, right", [(320, 55, 55), (321, 55, 56)])
def test_resize_center_crop_nan_margins_and_hot_patch(width, left, right):
    # BioViL-style: shorter side 240 -> 256, crop 224: c = floor(224 * 240 / 256) = 210 = 7 × 30
    geometry = ImageGeometry(mode="resize_center_crop", resize=256, crop=224)
    out = map_to_original(_hot(7, 7, 1, 5), (240, width), geometry, interpolation="nearest")
    nan = np.isnan(out)
    assert nan[:15].all() and nan[-15:].all() and not nan[15:225, left : width - right].any()
    assert nan[:, :left].all() and nan[:, width - right :].all()
    assert nan.sum() == 240 * width - 210 * 210
    rows, cols = np.nonzero(out == 1.0)
    assert (rows.min(), rows.max()) == (15 + 30, 15 + 59)
    assert (cols.min(), cols.max()) == (left + 150, left + 179)


def test_bilinear_map_peaks_on_hot_patch_and_keeps_constants():
    geometry = ImageGeometry(mode="pad_resize", size=224)
    out = map_to_original(_hot(7, 7, 2, 3), (280, 140), geometry)  # bilinear default
    peak = np.unravel_index(np.argmax(out), out.shape)
    assert 80 <= peak[0] <= 119 and 50 <= peak[1] <= 89
    assert out.min() >= 0.0 and out.max() <= 1.0
    const = map_to_original(np.full((7, 7), 0.25), (300, 200), ImageGeometry("resize_center_crop", resize=512, crop=480))
    assert np.allclose(const[~np.isnan(const)], 0.25)


def test_resize_mode_and_geometry_validation():
    out = map_to_original(_hot(2, 2, 0, 1), (4, 6), ImageGeometry("resize", size=224), interpolation="nearest")
    expected = np.zeros((4, 6))
    expected[:2, 3:] = 1.0
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="crop=300 exceeds resize"):
        ImageGeometry("resize_center_crop", resize=256, crop=300)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        ImageGeometry("pad_resize")
    with pytest.raises(ValueError, match="not used"):
        ImageGeometry("pad_resize", size=224, resize=256)
    with pytest.raises(ValueError, match="mode"):
        ImageGeometry("letterbox", size=224)
    with pytest.raises(ValueError, match="interpolation"):
        map_to_original(np.zeros((2, 2)), (4, 4), ImageGeometry("resize", size=2), interpolation="bicubic")


# --------------------------------------------------------------------------------------------------
# end to end and aggregation
# --------------------------------------------------------------------------------------------------
def test_grounding_cnr_composes_pipeline_and_rewards_aligned_patches():
    rng = np.random.default_rng(0)
    d = 16
    text = rng.normal(size=d)
    patches = rng.normal(size=(7, 7, d))
    patches[3:5, 1:3] += 4 * text  # patches aligned with the phrase
    geometry = ImageGeometry(mode="pad_resize", size=224)
    # 280 × 140 image: patch rows 3..4 = pixel rows 120..199; patch cols 1..2 = canvas 40..119 -> cols 0..49
    boxes = [[0, 120, 50, 80]]
    value, full = grounding_cnr(patches, torch.tensor(text), boxes, (280, 140), geometry)
    manual = map_to_original(smooth_similarity(patch_similarity(patches, text), 1.5), (280, 140), geometry)
    np.testing.assert_allclose(full, manual)
    assert value == pytest.approx(cnr(manual, boxes_to_mask(boxes, 280, 140)))
    wrong_box, _ = grounding_cnr(patches, text, [[60, 0, 50, 80]], (280, 140), geometry)
    assert value > 1.0 > wrong_box


def test_aggregate_cnr():
    df = pd.DataFrame(
        {
            "category_name": ["Edema", "Edema", "Edema", "Pneumothorax", "Pneumothorax"],
            "cnr": [1.0, 2.0, np.nan, 0.5, 1.5],
        }
    )
    agg = aggregate_cnr(df)
    assert list(agg.index) == ["Edema", "Pneumothorax", "overall"]
    assert agg.loc["Edema", "mean"] == 1.5 and agg.loc["Edema", "count"] == 2
    assert agg.loc["Edema", "n_undefined"] == 1
    assert agg.loc["Edema", "std"] == pytest.approx(math.sqrt(0.5))
    assert agg.loc["overall", "mean"] == pytest.approx(5.0 / 4) and agg.loc["overall", "count"] == 4
    assert agg.loc["overall", "ci95"] == pytest.approx(1.96 * np.std([1, 2, 0.5, 1.5], ddof=1) / 2)
    with pytest.raises(ValueError, match="column 'cnr' missing"):
        aggregate_cnr(df.rename(columns={"cnr": "value"}))


def test_image_geometry_roundtrips_through_config_helpers():
    from localign.config import config_from_dict, config_to_dict

    for g in (
        ImageGeometry("pad_resize", size=224),
        ImageGeometry("pad_resize", size=256, crop=224),
        ImageGeometry("resize_center_crop", resize=512, crop=480),
    ):
        assert config_from_dict(ImageGeometry, config_to_dict(g)) == g
    assert ImageGeometry("pad_resize", size=256, crop=224).input_size() == 224

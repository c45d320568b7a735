"""Known-answer tests for localign.metrics and localign.eval.stats."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from localign.eval import (
    EDEMA_THRESHOLD_NAMES,
    auroc_per_class,
    box_iou,
    box_map,
    chance_recall_at_k,
    dice_dataset,
    dice_per_image,
    edema_ordinal_aucs,
    mean_ci95,
    mean_dice_per_image,
    recall_at_k,
    retrieval_ranks,
    summarize_tidy,
    tidy_from_metrics,
    validate_tidy,
)

# --------------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------------
# Hand-worked example. Row i = image i, column j = text j, diagonal = match.
#   i2t: row 0 match 0.9 is the maximum -> rank 0; row 1 match 0.2 < 0.5, 0.3, 0.4 -> 3;
#        row 2 match 0.5 < 0.7, 0.6 -> 2; row 3 match 0.1 < 0.3, 0.2 -> 2.
#   t2i: col 0 -> 0; col 1 match 0.2 < 0.6, 0.3 -> 2; col 2 match 0.5 < 0.8 -> 1;
#        col 3 match 0.1 < 0.4 and tied with S[2, 3] = 0.1 -> 2 (pessimistic) or 1.5 (expected).
HAND = np.array(
    [
        [0.9, 0.1, 0.8, 0.0],
        [0.5, 0.2, 0.3, 0.4],
        [0.7, 0.6, 0.5, 0.1],
        [0.0, 0.3, 0.2, 0.1],
    ]
)


def test_identity_scores_are_perfect():
    r = recall_at_k(np.eye(20), ks=(1, 5, 10))
    for d in ("i2t", "t2i"):
        assert r[f"{d}_R@1"] == r[f"{d}_R@5"] == r[f"{d}_R@10"] == 100.0
        assert r[f"{d}_medr"] == 1.0 and r[f"{d}_meanr"] == 1.0 and r[f"{d}_mrr"] == 1.0
    assert r["r_sum"] == 600.0
    assert (r["pool_size"], r["n_chunks"], r["n_pairs"], r["n_dropped"]) == (20, 1, 20, 0)


def test_permuted_identity_gives_hand_computed_ranks():
    # texts shuffled by a permutation: image i's best text is perm[i], the match i has score 0 and
    # loses against exactly one candidate (score 1) unless perm[i] == i.
    perm = np.array([1, 0, 2, 4, 3])
    scores = np.eye(5)[perm]  # S[i, perm[i]] = 1
    i2t, t2i = retrieval_ranks(scores)
    # i with perm[i] == i (only i = 2) has rank 0; the others have one strictly higher candidate
    # and three ties at 0 (pessimistic: counted against the match) -> rank 4.
    np.testing.assert_array_equal(i2t, [4, 4, 0, 4, 4])
    np.testing.assert_array_equal(t2i, [4, 4, 0, 4, 4])
    r = recall_at_k(scores, ks=(1, 5))
    assert r["i2t_R@1"] == pytest.approx(20.0)
    assert r["i2t_R@5"] == pytest.approx(100.0)
    i2t_e, _ = retrieval_ranks(scores, ties="expected")
    np.testing.assert_array_equal(i2t_e, [2.5, 2.5, 0, 2.5, 2.5])  # 1 higher + 3 ties / 2


def test_hand_example_pessimistic():
    i2t, t2i = retrieval_ranks(HAND)
    np.testing.assert_array_equal(i2t, [0, 3, 2, 2])
    np.testing.assert_array_equal(t2i, [0, 2, 1, 2])
    r = recall_at_k(HAND, ks=(1, 2, 3))
    assert r["i2t_R@1"] == pytest.approx(25.0)
    assert r["i2t_R@2"] == pytest.approx(25.0)
    assert r["i2t_R@3"] == pytest.approx(75.0)
    assert r["i2t_medr"] == 3.0  # median(0, 2, 2, 3) = 2 -> 2 + 1
    assert r["i2t_meanr"] == pytest.approx(2.75)
    assert r["i2t_mrr"] == pytest.approx((1 + 1 / 4 + 1 / 3 + 1 / 3) / 4)
    assert r["t2i_R@1"] == pytest.approx(25.0)
    assert r["t2i_R@2"] == pytest.approx(50.0)
    assert r["t2i_R@3"] == pytest.approx(100.0)
    assert r["t2i_medr"] == 2.0  # median(0, 1, 2, 2) = 1.5 -> floor 1 + 1
    assert r["t2i_meanr"] == pytest.approx(2.25)
    assert r["t2i_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 3) / 4)
    assert r["r_sum"] == pytest.approx(25 + 25 + 75 + 25 + 50 + 100)


def test_hand_example_expected_tie_rule():
    _, t2i = retrieval_ranks(HAND, ties="expected")
    np.testing.assert_array_equal(t2i, [0, 2, 1, 1.5])
    r = recall_at_k(HAND, ks=(1, 2, 3), ties="expected")
    # the tied query sits at rank 1 or 2 with probability 1/2 each
    assert r["t2i_R@2"] == pytest.approx(100 * (1 + 0 + 1 + 0.5) / 4)
    assert r["t2i_mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + (1 / 2 + 1 / 3) / 2) / 4)
    assert r["t2i_meanr"] == pytest.approx((0 + 2 + 1 + 1.5) / 4 + 1)
    # i2t has no ties: both rules agree
    p = recall_at_k(HAND, ks=(1, 2, 3))
    for key in ("i2t_R@1", "i2t_R@2", "i2t_R@3", "i2t_mrr", "i2t_medr", "i2t_meanr"):
        assert r[key] == pytest.approx(p[key])


def test_reversed_order_and_constant_columns():
    n = 6
    # every image ranks the texts in the same order j = n-1, ..., 0: image i's match has n-1-i above it.
    scores = np.tile(np.arange(n, dtype=float), (n, 1))
    i2t, t2i = retrieval_ranks(scores)
    np.testing.assert_array_equal(i2t, n - 1 - np.arange(n))
    # each column is constant, so every text->image query is a complete tie
    np.testing.assert_array_equal(t2i, np.full(n, n - 1))
    r = recall_at_k(scores, ks=(1, 2))
    assert r["i2t_R@1"] == pytest.approx(100 / n)
    assert r["i2t_R@2"] == pytest.approx(200 / n)
    assert r["t2i_R@1"] == 0.0  # pessimistic: ties never help
    e = recall_at_k(scores, ks=(1, 2), ties="expected")
    assert e["t2i_R@1"] == pytest.approx(100 / n)  # exactly chance
    assert e["t2i_R@2"] == pytest.approx(200 / n)


def test_constant_scores_pessimistic_worst_expected_chance():
    scores = np.full((10, 10), 0.3)
    p = recall_at_k(scores, ks=(1, 5))
    assert p["i2t_R@1"] == p["t2i_R@5"] == 0.0
    assert p["i2t_medr"] == 10.0
    e = recall_at_k(scores, ks=(1, 5), ties="expected")
    chance = chance_recall_at_k(10, ks=(1, 5))
    for key, value in chance.items():
        assert e[key] == pytest.approx(value), key
    assert chance["i2t_R@5"] == 50.0
    assert chance["i2t_meanr"] == 5.5
    assert chance["i2t_medr"] == 5.0  # floor(median of 0..9 = 4.5) + 1
    assert chance["i2t_mrr"] == pytest.approx(sum(1 / k for k in range(1, 11)) / 10)


def test_ranks_match_argsort_position_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 50))
    i2t, t2i = retrieval_ranks(scores)
    expected_i2t = [int(np.where(np.argsort(-scores[i]) == i)[0][0]) for i in range(50)]
    expected_t2i = [int(np.where(np.argsort(-scores[:, j]) == j)[0][0]) for j in range(50)]
    np.testing.assert_array_equal(i2t, expected_i2t)
    np.testing.assert_array_equal(t2i, expected_t2i)
    i2t_e, _ = retrieval_ranks(scores, ties="expected")
    np.testing.assert_array_equal(i2t, i2t_e)


def test_random_scores_near_chance():
    rng = np.random.default_rng(1)
    r = recall_at_k(rng.normal(size=(2000, 2000)), ks=(10, 50), chunk_size=100)
    assert r["n_chunks"] == 20 and r["pool_size"] == 100
    # expected 10 % and 50 %; sd of the mean over 2000 queries is ~0.7 and ~1.1 points
    assert abs(r["i2t_R@10"] - 10.0) < 3.0 and abs(r["t2i_R@10"] - 10.0) < 3.0
    assert abs(r["i2t_R@50"] - 50.0) < 4.0


def test_chunked_pool_and_remainder():
    # identity inside 4x4 diagonal blocks, but a larger score for every cross-block candidate:
    # each query is perfect within its chunk and hopeless in the whole split.
    n, p = 10, 4
    scores = np.full((n, n), 5.0)
    for c in range(0, n, p):
        block = slice(c, min(c + p, n))
        scores[block, block] = 0.0
    np.fill_diagonal(scores, 1.0)
    chunked = recall_at_k(scores, ks=(1,), chunk_size=p)
    assert chunked["i2t_R@1"] == 100.0 and chunked["t2i_R@1"] == 100.0
    assert (chunked["n_chunks"], chunked["pool_size"], chunked["n_pairs"], chunked["n_dropped"]) == (2, 4, 8, 2)
    whole = recall_at_k(scores, ks=(1,))
    assert whole["i2t_R@1"] == 0.0 and whole["pool_size"] == 10


def test_chunk_metrics_are_unweighted_means_over_chunks():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(9, 9)) + 2 * np.eye(9)
    chunked = recall_at_k(scores, ks=(1, 2), chunk_size=3)
    per = [recall_at_k(scores[c : c + 3, c : c + 3], ks=(1, 2)) for c in (0, 3, 6)]
    for key in ("i2t_R@1", "t2i_R@2", "i2t_medr", "t2i_mrr", "i2t_meanr", "r_sum"):
        assert chunked[key] == pytest.approx(np.mean([q[key] for q in per])), key


def test_recall_accepts_torch_and_validates():
    r = recall_at_k(torch.eye(4), ks=(1,))
    assert r["i2t_R@1"] == 100.0
    with pytest.raises(ValueError, match="N_img == N_txt"):
        recall_at_k(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        recall_at_k(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="chunk_size=8 is larger"):
        recall_at_k(np.eye(5), chunk_size=8)
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(np.eye(5), ks=(0, 1))
    with pytest.raises(ValueError, match="ties"):
        recall_at_k(np.eye(5), ties="optimistic")


# --------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------
def test_auroc_perfect_inverted_and_hand_value():
    y = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=float)
    s = np.empty((4, 3))
    s[:, 0] = [0.1, 0.2, 0.3, 0.4]  # perfect
    s[:, 1] = [0.1, 0.2, 0.3, 0.4]  # positives {.2, .4} vs negatives {.1, .3}: 3 of 4 pairs ordered -> 0.75
    s[:, 2] = [0.4, 0.3, 0.2, 0.1]  # inverted
    r = auroc_per_class(y, s, ["a", "b", "c"])
    assert r["a"] == 1.0
    assert r["b"] == pytest.approx(0.75)
    assert r["c"] == 0.0
    assert r["macro"] == pytest.approx((1 + 0.75 + 0) / 3)


def test_auroc_random_is_half():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(20000, 2)).astype(float)
    r = auroc_per_class(y, rng.random((20000, 2)), ["a", "b"])
    assert abs(r["a"] - 0.5) < 0.02 and abs(r["b"] - 0.5) < 0.02


def test_auroc_ignores_nan_labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(200, 1)).astype(float)
    s = rng.random((200, 1))
    y_nan = y.copy()
    y_nan[:50] = np.nan
    s_extreme = s.copy()
    s_extreme[:50] = 100.0  # scores of unlabelled rows must not matter
    r = auroc_per_class(y_nan, s_extreme, ["x"])
    assert r["x"] == pytest.approx(auroc_per_class(y[50:], s[50:], ["x"])["x"])


def test_auroc_single_valued_class_is_nan_and_excluded(caplog):
    y = np.array([[0, 1], [1, 1], [0, 1], [1, np.nan]])
    s = np.array([[0.1, 0.5], [0.9, 0.2], [0.2, 0.3], [0.8, 0.1]])
    with caplog.at_level(logging.WARNING, logger="localign.metrics"):
        r = auroc_per_class(y, s, ["ok", "all_positive"])
    assert math.isnan(r["all_positive"])
    assert r["macro"] == r["ok"] == 1.0
    assert "all_positive" in caplog.text


def test_auroc_rejects_uncertain_labels_and_bad_shapes():
    with pytest.raises(ValueError, match="labels must be 0, 1 or NaN"):
        auroc_per_class(np.array([[1.0], [-1.0]]), np.zeros((2, 1)), ["a"])
    with pytest.raises(ValueError, match="class_names"):
        auroc_per_class(np.zeros((2, 2)), np.zeros((2, 2)), ["a"])
    with pytest.raises(ValueError, match="y_score: shape"):
        auroc_per_class(np.zeros((2, 2)), np.zeros((3, 2)), ["a", "b"])


def test_edema_ordinal_aucs_hand_built():
    severity = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    score = np.array([0.1, 0.5, 0.4, 0.2, 0.6, 0.9, 0.7, 0.8])
    r = edema_ordinal_aucs(severity, score)
    # 0 vs 1,2,3: negatives {.1, .5}; .1 is below all 6 positives, .5 below 4 of them -> 10/12
    assert r["0 vs 1,2,3"] == pytest.approx(10 / 12)
    # 0,1 vs 2,3: {.6,.9,.7,.8} all above {.1,.5,.4,.2}
    assert r["0,1 vs 2,3"] == 1.0
    # 0,1,2 vs 3: .7 and .8 each beat 5 of 6 negatives (not .9) -> 10/12
    assert r["0,1,2 vs 3"] == pytest.approx(10 / 12)
    assert r["mean"] == pytest.approx((10 / 12 + 1 + 10 / 12) / 3)
    assert (r["n"], r["n_unlabelled"]) == (8, 0)
    assert tuple(k for k in r if " vs " in k) == EDEMA_THRESHOLD_NAMES


def test_edema_probabilities_use_cumulative_scores():
    severity = np.array([0, 1, 3, 3, 2, np.nan])
    probs = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.2, 0.6, 0.1, 0.1],
            [0.1, 0.1, 0.1, 0.7],
            [0.5, 0.0, 0.0, 0.5],  # low expected severity but P(s >= 3) = 0.5
            [0.0, 0.2, 0.7, 0.1],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    r = edema_ordinal_aucs(severity, probs)
    assert r["n_unlabelled"] == 1
    # P(s >= 3) = .1 .1 .7 .5 .1 : both severity-3 images score above the three others -> 1.0
    assert r["0,1,2 vs 3"] == 1.0
    # P(s >= 1) = .3 .8 .9 .5 1.0 : only the severity-0 image is negative and it is lowest -> 1.0
    assert r["0 vs 1,2,3"] == 1.0
    # P(s >= 2) = .2 .2 .8 .5 .8 : negatives {.2, .2}, positives {.8, .5, .8} -> 1.0
    assert r["0,1 vs 2,3"] == 1.0
    # with the expected severity instead, the [.5, 0, 0, .5] image (E = 1.5) ranks below the
    # severity-2 image (E = 1.9) and the 0,1,2 vs 3 AUC drops
    expected = (probs * np.arange(4)).sum(axis=1)
    assert edema_ordinal_aucs(severity, expected)["0,1,2 vs 3"] == pytest.approx(5 / 6)


def test_edema_validates():
    with pytest.raises(ValueError, match="values must be 0, 1, 2, 3"):
        edema_ordinal_aucs(np.array([0, 4]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="class probabilities"):
        edema_ordinal_aucs(np.array([0, 1]), np.array([[2.0, -1, 0, 0], [1, 0, 0, 0]]))


# --------------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------------
PRED = np.array(
    [
        [[1, 1], [0, 0]],  # target [[1, 0], [0, 0]]: TP 1, FP 1, FN 0 -> 2/3
        [[0, 0], [0, 0]],  # target all ones: TP 0, FN 4 -> 0
        [[0, 0], [0, 0]],  # both empty -> 1 by convention
    ],
    dtype=bool,
)
TARGET = np.array([[[1, 0], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]], dtype=bool)


def test_dice_pooled_vs_per_image():
    assert dice_dataset(PRED, TARGET) == pytest.approx(2 * 1 / (2 * 1 + 1 + 4))  # pooled: TP 1, FP 1, FN 4
    np.testing.assert_allclose(dice_per_image(PRED, TARGET), [2 / 3, 0.0, 1.0])
    assert mean_dice_per_image(PRED, TARGET) == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_dice_thresholds_probabilities_and_accepts_channel_axis():
    probs = np.where(PRED, 0.5, 0.49)[:, None]  # p >= 0.5 is positive
    assert dice_dataset(torch.from_numpy(probs), TARGET[:, None].astype(np.float32)) == pytest.approx(2 / 7)
    np.testing.assert_allclose(dice_per_image(probs, TARGET), [2 / 3, 0.0, 1.0])
    assert dice_dataset(probs, TARGET, threshold=0.6) == 0.0  # nothing predicted
    assert dice_dataset(np.zeros((2, 3, 3)), np.zeros((2, 3, 3))) == 1.0


def test_dice_validates():
    with pytest.raises(ValueError, match="logits"):
        dice_dataset(np.full((1, 2, 2), 3.0), TARGET[:1])
    with pytest.raises(ValueError, match="channels"):
        dice_dataset(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        dice_dataset(PRED, TARGET[:2])
    with pytest.raises(ValueError, match="0/1 mask"):
        dice_dataset(PRED, TARGET * 2.0)


# --------------------------------------------------------------------------------------------------
# statistics and the tidy schema
# --------------------------------------------------------------------------------------------------
def test_mean_ci95_hand_computation():
    mean, half = mean_ci95([1, 2, 3, 4, 5])
    # s = sqrt(2.5) (ddof 1), half = 1.96 * s / sqrt(5)
    assert mean == 3.0
    assert half == pytest.approx(1.96 * math.sqrt(2.5) / math.sqrt(5))
    assert half == pytest.approx(1.38593, abs=1e-5)
    mean1, half1 = mean_ci95(torch.tensor([0.7]))
    assert mean1 == pytest.approx(0.7) and math.isnan(half1)
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci95([1.0, np.nan])
    with pytest.raises(ValueError, match="empty"):
        mean_ci95([])


def _tidy() -> pd.DataFrame:
    rows = []
    for seed, v in enumerate([0.80, 0.82, 0.84]):
        rows.append(("r1", "lovt", "chexpert_linear", 0.01, seed, "macro", v))
        rows.append(("r1", "lovt", "chexpert_linear", 0.01, seed, "Edema", np.nan if seed == 0 else v))
    rows.append(("r2", "convirt", "chexpert_linear", 1.0, 0, "macro", 0.9))
    return pd.DataFrame(rows, columns=["run", "method", "task", "fraction", "seed", "metric", "value"])


def test_tidy_validate_and_summarize():
    t = validate_tidy(_tidy().iloc[:, ::-1])  # column order does not matter
    assert list(t.columns) == ["run", "method", "task", "fraction", "seed", "metric", "value"]
    s = summarize_tidy(_tidy()).set_index(["run", "metric"])
    macro = s.loc[("r1", "macro")]
    assert macro["mean"] == pytest.approx(0.82)
    assert macro["ci95"] == pytest.approx(1.96 * 0.02 / math.sqrt(3))
    assert (macro["n"], macro["n_missing"]) == (3, 0)
    edema = s.loc[("r1", "Edema")]
    assert edema["mean"] == pytest.approx(0.83) and (edema["n"], edema["n_missing"]) == (2, 1)
    single = s.loc[("r2", "macro")]
    assert single["mean"] == 0.9 and math.isnan(single["ci95"]) and single["n"] == 1


def test_tidy_rejects_bad_tables():
    good = _tidy()
    with pytest.raises(ValueError, match="missing columns \\['seed'\\]"):
        validate_tidy(good.drop(columns="seed"))
    with pytest.raises(ValueError, match="unexpected columns \\['split'\\]"):
        validate_tidy(good.assign(split="test"))
    with pytest.raises(ValueError, match="share a key"):
        validate_tidy(pd.concat([good, good.iloc[:1]]))
    with pytest.raises(ValueError, match="fraction"):
        validate_tidy(good.assign(fraction=10.0))
    with pytest.raises(ValueError, match="seed"):
        validate_tidy(good.assign(seed=0.5))
    with pytest.raises(ValueError, match="value"):
        validate_tidy(good.assign(value=np.inf))
    with pytest.raises(ValueError, match="method"):
        validate_tidy(good.assign(method=""))


def test_tidy_from_metrics_roundtrip():
    metrics = recall_at_k(np.eye(5), ks=(1,))
    t = tidy_from_metrics(metrics, run="r", method="m", task="retrieval", fraction=1.0, seed=0)
    assert len(t) == len(metrics)
    assert t.set_index("metric").loc["i2t_R@1", "value"] == 100.0
    assert t["seed"].dtype == np.int64


# --------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------
def test_box_iou_conventions():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 5], [5, 0, 10, 10], [30, 30, 2, 2]]
    np.testing.assert_allclose(box_iou(a, b, plus_one=False), [[0.5, 50 / 150, 0.0]])
    # +1 convention: a covers 11 × 11 px, b[0] 11 × 6 px, intersection 11 × 6
    assert box_iou(a, b)[0, 0] == pytest.approx(66 / 121)


def test_box_map_perfect_and_hand_example():
    gt = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]]), np.zeros((0, 4))]
    perfect = box_map(gt, [np.array([0.9]), np.array([0.8]), np.zeros(0)], gt)
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["n_gt"] == 2
    # by descending score: a false positive on image 0, the exact box on image 0, and on image 1 a
    # box with IoU exactly 0.5 (a true positive only for t < 0.5, since a match needs IoU > t)
    preds = [np.array([[20, 20, 10, 10], [0, 0, 10, 10]]), np.array([[0, 0, 10, 5]]), np.zeros((0, 4))]
    scores = [np.array([0.95, 0.9]), np.array([0.8]), np.zeros(0)]
    r = box_map(preds, scores, gt, plus_one=False)
    # t < 0.5: FP, TP, TP -> precision (0, 1/2, 2/3), recall (0, 1/2, 1): every recall point has max precision 2/3
    assert r["AP@0.4"] == pytest.approx(2 / 3) and r["AP@0.45"] == pytest.approx(2 / 3)
    # t >= 0.5: FP, TP, FP -> recall reaches only 1/2 with precision 1/2: 51 of 101 points (0 .. 0.50)
    for t in ("0.5", "0.55", "0.6", "0.65", "0.7", "0.75"):
        assert r[f"AP@{t}"] == pytest.approx(0.5 * 51 / 101)
    assert r["mAP"] == pytest.approx((2 * 2 / 3 + 6 * 0.5 * 51 / 101) / 8)


def test_box_map_duplicates_and_soft_matching():
    gt = [np.array([[0, 0, 10, 10], [5, 0, 10, 10]])]
    # first prediction matches box 0 (IoU 1); the second is closest to box 0 too (IoU 9/11 vs 6/14
    # with box 1), which is taken, so the soft policy matches it to box 1 instead
    preds = [np.array([[0, 0, 10, 10], [1, 0, 10, 10]])]
    iou = box_iou(preds[0], gt[0], plus_one=False)
    assert iou[1, 0] == pytest.approx(9 / 11) and iou[1, 1] == pytest.approx(6 / 14)
    r = box_map(preds, [np.array([0.9, 0.8])], gt, iou_thresholds=(0.4,), plus_one=False)
    assert r["mAP"] == pytest.approx(1.0)
    # at t = 0.5 box 1 is out of reach, so the duplicate is a false positive: recall 1/2, precision 1
    r = box_map(preds, [np.array([0.9, 0.8])], gt, iou_thresholds=(0.5,), plus_one=False)
    assert r["mAP"] == pytest.approx(51 / 101)


def test_box_map_validates():
    with pytest.raises(ValueError, match="no ground-truth box"):
        box_map([np.zeros((1, 4))], [np.ones(1)], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="one per image"):
        box_map([np.zeros((1, 4))], [], [np.zeros((1, 4))])
    with pytest.raises(ValueError, match="scores for"):
        box_map([np.zeros((2, 4))], [np.ones(1)], [np.ones((1, 4))])


# --- effective rank (dimensional collapse) ----------------------------------------------------------


def test_effective_rank_counts_the_components_that_hold_the_variance():
    from localign.metrics import effective_rank

    rng = np.random.default_rng(0)
    iso = rng.normal(size=(2000, 8))
    assert effective_rank(iso) == 8  # isotropic: every component is needed
    line = rng.normal(size=(500, 1)) @ rng.normal(size=(1, 20))  # rank 1 in 20 dims
    assert effective_rank(line + 1e-9 * rng.normal(size=(500, 20))) == 1
    # standardisation: one huge-scale feature does not hide the others
    scaled = iso * np.array([1e4, 1, 1, 1, 1, 1, 1, 1])
    assert effective_rank(scaled) == 8
    # constant (dead) features count for nothing
    dead = np.concatenate([iso[:, :3], np.zeros((2000, 5))], axis=1)
    assert effective_rank(dead) == 3
    assert effective_rank(np.ones((10, 4))) == 0
    # known spectrum after standardisation: two perfectly correlated pairs + one free feature
    a, b = rng.normal(size=(5000, 1)), rng.normal(size=(5000, 1))
    x = np.concatenate([a, a, b, b, rng.normal(size=(5000, 1))], axis=1)
    assert effective_rank(x, variance=0.99) == 3
    assert effective_rank(x, variance=0.3) == 1


def test_effective_rank_rejects_bad_input():
    from localign.metrics import effective_rank

    with pytest.raises(ValueError, match=r"\[N, D\]"):
        effective_rank(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        effective_rank(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="variance"):
        effective_rank(np.zeros((4, 3)), variance=1.5)

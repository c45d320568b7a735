"""localign.eval.analyses.weight_maps: the weight-maps chapter's measures on planted inputs, and its wiring on tiny runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from localign.eval.analyses import weight_maps as wm

# --------------------------------------------------------------------------------------------------
# sentences → table rows → masks
# --------------------------------------------------------------------------------------------------


def _rows():
    # the table lists impression before findings and out of order; the ids are arbitrary
    return pd.DataFrame({"section": ["IMPRESSION", "FINDINGS", "FINDINGS"], "sentence_index": [0, 1, 0],
                         "sentence": ["Small effusion.", "No pneumothorax.", "Heart is normal."]}, index=[30, 11, 10])


def test_align_sentence_rows_orders_by_section_then_index_and_checks_the_text():
    rows = _rows()
    got = wm.align_sentence_rows(["Heart is normal.", "No pneumothorax.", "Small effusion."], rows, ["findings", "impression"])
    assert got.tolist() == [10, 11, 30]
    with pytest.raises(ValueError, match="sentence 0 differs"):
        wm.align_sentence_rows(["No pneumothorax.", "Heart is normal.", "Small effusion."], rows)
    with pytest.raises(ValueError, match="2 manifest sentences"):
        wm.align_sentence_rows(["Heart is normal.", "No pneumothorax."], rows)
    with pytest.raises(ValueError, match="not in sections"):
        wm.align_sentence_rows(["a", "b", "c"], rows, ["findings"])


def test_token_sentence_index_skips_sentences_without_tokens_and_caps():
    tokens = [[5, 6], [], [7], [8, 9], []]
    assert wm.token_sentence_index(tokens).tolist() == [0, 2, 3]
    assert wm.token_sentence_index(tokens, max_sentences=2).tolist() == [0, 2]
    assert wm.token_sentence_index([]).tolist() == []
    with pytest.raises(ValueError, match="max_sentences"):
        wm.token_sentence_index(tokens, max_sentences=0)


def test_input_mask_pads_centrally_then_resizes():
    mask = np.zeros((8, 4), bool)
    mask[:, :2] = True  # left half of a tall image
    out = wm.input_mask(mask, 8)
    # padded to 8x8 with 2 columns each side: the mask covers columns 2..3 of the square
    assert out.shape == (8, 8) and out[:, 2:4].all() and not out[:, :2].any() and not out[:, 4:].any()
    assert wm.input_mask(np.ones((4, 4), bool), 2).all()
    with pytest.raises(ValueError, match="mask"):
        wm.input_mask(np.ones(4), 2)
    with pytest.raises(ValueError, match="size"):
        wm.input_mask(np.ones((4, 4)), 0)


# --------------------------------------------------------------------------------------------------
# local MI's selection
# --------------------------------------------------------------------------------------------------


def test_selection_table_planted_selection_gives_the_known_hit_rate():
    grid = (2, 2)
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True  # sentence 0: top-left cell (region 0)
    masks[2, 2:, :] = True  # sentence 2: bottom row (regions 2, 3); sentence 1 has no mask
    # slots: sentence 0, then sentence 1 and 2 (the manifest indices)
    scores = np.array([[5.0, 1, 1, 1],    # selects 0: hit
                       [0.0, 9, 0, 0],    # no mask: not scored
                       [9.0, 0, 0, 1]])   # selects 0: miss (mask is regions 2, 3)
    frame, summary = wm.selection_table([scores], [[0, 1, 2]], [masks], grid, study_ids=[7], categories=[["a", "", "b"]])
    assert frame["selected"].tolist() == [0, 1, 0]
    assert frame["scored"].tolist() == [True, False, True]
    assert frame["hit"].tolist() == [True, False, False]
    np.testing.assert_allclose(frame["chance"].to_numpy()[[0, 2]], [0.25, 0.5])
    assert summary == {"rate": 0.5, "chance": 0.375, "n_scored": 2, "n_hits": 1}
    assert frame["study_id"].unique().tolist() == [7] and frame["category"].tolist() == ["a", "", "b"]
    # a slot map that skips a sentence: slot 1 is manifest sentence 2
    frame, _ = wm.selection_table([scores[[0, 2]]], [[0, 2]], [masks], grid)
    assert frame["sentence"].tolist() == [0, 2] and frame["hit"].tolist() == [True, False]
    # padded [N, M', K] scores: rows beyond the study's slots are ignored
    padded = np.concatenate([scores, np.zeros((2, 4))])
    f2, s2 = wm.selection_table(padded[None], [[0, 1, 2]], [masks], grid)
    assert f2["selected"].tolist() == [0, 1, 0] and s2["rate"] == 0.5
    with pytest.raises(ValueError, match="outside"):
        wm.selection_table([scores], [[0, 1, 5]], [masks], grid)
    with pytest.raises(ValueError, match="expected \\[M, 4\\]"):
        wm.selection_table([scores[:, :3]], [[0, 1, 2]], [masks], grid)


# --------------------------------------------------------------------------------------------------
# word attention
# --------------------------------------------------------------------------------------------------


def test_attention_inside_outside_of_planted_maps():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # region 0 of a 2x2 grid
    out = wm.attention_inside_outside([0.7, 0.1, 0.1, 0.1], mask, (2, 2))
    assert out["inside"] == pytest.approx(0.7) and out["outside"] == pytest.approx(0.1)
    assert out["mass"] == pytest.approx(0.7) and out["mass_chance"] == 0.25 and out["peak_inside"] == 1.0
    uniform = wm.attention_inside_outside(np.full((2, 2), 0.25), mask, (2, 2))
    assert uniform["inside"] == uniform["outside"] and uniform["mass"] == uniform["mass_chance"]
    assert uniform["peak_inside"] == 0.0  # a tie over all cells is not inside
    assert wm.attention_inside_outside([0.1, 0.7, 0.1, 0.1], mask, (2, 2))["peak_inside"] == 0.0
    with pytest.raises(ValueError, match="attention"):
        wm.attention_inside_outside([0.5, 0.5], mask, (2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        wm.attention_inside_outside([-1.0, 1, 1, 1], mask, (2, 2))


def test_slot_strings_and_sentences_with_a_real_tokenizer():
    from localign.data.tokenize import load_tokenizer

    tok = load_tokenizer("minilm")
    ids = [tok.cls_token_id] + tok.convert_tokens_to_ids(["small", "e", "##ff", "##usion", ".", "no", "op", "##ac", "##ity", "."]) + [tok.sep_token_id, tok.pad_token_id]
    word_ids = [0, 1, 2, 2, 2, 3, 4, 5, 5, 5, 6, -1, -1]
    assert wm.slot_strings(ids, word_ids, tok) == ["[CLS]", "small", "effusion", ".", "no", "opacity", "."]
    sentence_ids = [-1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1]
    assert wm.slot_sentences(word_ids, sentence_ids).tolist() == [-1, 0, 0, 0, 1, 1, 1]
    # joint sentence ids count sentences with tokens: through token_sentence_index to the manifest
    index = wm.token_sentence_index([[1, 2], [], [3]])
    assert wm.slot_sentences(word_ids, sentence_ids, index).tolist() == [-1, 0, 0, 0, 2, 2, 2]
    with pytest.raises(ValueError, match="beyond"):
        wm.slot_sentences(word_ids, sentence_ids, [0])


def test_word_shading_best_region_and_pick_example():
    shade = wm.word_shading(["[CLS]", "small", "effusion", "."], [5.0, 0.1, 0.4, 0.2])
    assert shade["word"].tolist() == ["small", "effusion", "."]  # [CLS] left out
    np.testing.assert_allclose(shade["weight"], [0.25, 1.0, 0.5])
    with pytest.raises(ValueError, match="weights"):
        wm.word_shading(["a", "b"], [1.0])
    mask = np.zeros((4, 4), bool)
    mask[2:, 3] = True  # in the bottom-right cell of a 2x2 grid only
    assert wm.best_region(mask, (2, 2)) == 3
    with pytest.raises(ValueError, match="empty"):
        wm.best_region(np.zeros((4, 4), bool), (2, 2))
    masks = np.zeros((3, 4, 4), bool)
    masks[1] = mask
    short = wm.StudyMasks(1, ["a", "b"], np.arange(2), ["", "effusion"], masks[:2])
    long = wm.StudyMasks(2, ["a", "b", "c"], np.arange(3), ["", "nodule", ""], masks)
    assert wm.pick_example([short, long]) == (2, 1)  # no long study has an effusion: any masked sentence
    assert wm.pick_example([short, long], min_sentences=2) == (1, 1)
    with pytest.raises(ValueError, match="no study"):
        wm.pick_example([wm.StudyMasks(3, ["a"] * 3, np.arange(3), [""] * 3, np.zeros((3, 4, 4), bool))])


def test_attention_examples_takes_the_first_common_occurrence():
    cols = ["study_id", "slot", "word", "sentence"]
    tables = {"A": pd.DataFrame([[1, 2, "effusion", 0], [2, 5, "effusion", 1]], columns=cols),
              "B": pd.DataFrame([[2, 5, "effusion", 1]], columns=cols)}
    rec = lambda sid: {"study_id": sid, "image": np.full((2, 2), sid), "att": np.arange(6 * 4).reshape(6, 4) + sid, "grid": (2, 2)}  # noqa: E731
    records = {"A": [rec(1), rec(2)], "B": [rec(1), rec(2)]}
    out = wm.attention_examples(tables, records, {"A": "att", "B": "att"}, ["effusion", "opacity"])
    assert len(out) == 1 and out[0]["study_id"] == 2 and out[0]["slot"] == 5 and out[0]["sentence"] == 1
    np.testing.assert_array_equal(out[0]["maps"]["A"], (np.arange(20, 24) + 2).reshape(2, 2))  # row-major on the grid
    with pytest.raises(ValueError, match="same methods"):
        wm.attention_examples(tables, {"A": records["A"]}, {"A": "att", "B": "att"}, ["effusion"])


def test_finding_word_table_keeps_finding_words_of_masked_sentences():
    mask = np.zeros((2, 4, 4), bool)
    mask[0, :2, :2] = True
    sm = wm.StudyMasks(1, ["Small effusion.", "No edema."], np.array([0, 1]), ["effusion", ""], mask)
    rec = {"study_id": 1, "words": ["[CLS]", "small", "effusion", ".", "no", "edema", "."],
           "word_sentence": np.array([-1, 0, 0, 0, 1, 1, 1]), "attention": np.full((7, 4), 0.25)}
    rec["attention"][2] = [0.7, 0.1, 0.1, 0.1]
    table = wm.finding_word_table([rec], {1: sm}, (2, 2))
    # "edema" is a finding word but its sentence (a negation) has no mask
    assert table["word"].tolist() == ["effusion"] and table["slot"].tolist() == [2] and table["category"].tolist() == ["effusion"]
    assert table["inside"].iloc[0] == pytest.approx(0.7) and table["peak_inside"].iloc[0] == 1.0


def test_weight_map_frame():
    f = wm.weight_map_frame(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert f["row"].tolist() == [0, 0, 1, 1] and f["col"].tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(f["relative"], [0.4, 0.8, 1.2, 1.6])
    with pytest.raises(ValueError, match="weight_map"):
        wm.weight_map_frame(np.ones(3))


def test_lovt_weight_map_of_planted_weights():
    """A stand-in model whose region weights are planted: the map is their mean, uniform without attention pooling."""
    planted = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])

    class Model:
        def __init__(self, weights):
            self.weights = weights

        def local_features(self, images, text):
            n = images.shape[0]
            return SimpleNamespace(grid=(2, 2), image_weights=None if self.weights is None else self.weights[:n])

    def batches(weights, pool):
        batch = SimpleNamespace(images=torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]), text=None)
        method = SimpleNamespace(loss=SimpleNamespace(image_pool=pool, local_weights="attention" if pool == "attention" else "uniform"))
        return SimpleNamespace(model=Model(weights), run=SimpleNamespace(method=method), __iter__=None), [batch]

    ns, items = batches(planted, "attention")

    class B:
        model, run = ns.model, ns.run

        def __iter__(self):
            return iter(items)

    out = wm.lovt_weight_map(B())
    np.testing.assert_allclose(out["weight_map"], [[0.4, 0.1], [0.1, 0.4]])
    np.testing.assert_allclose(out["mean_image"], np.full((4, 4), 0.5))
    assert out["source"] == "attention" and out["grid"] == (2, 2)
    ns, items = batches(None, "avg")
    B.model, B.run = ns.model, ns.run
    out = wm.lovt_weight_map(B())
    np.testing.assert_allclose(out["weight_map"], np.full((2, 2), 0.25))
    assert out["source"] == "uniform" and out["local_weights"] == "uniform"


# --------------------------------------------------------------------------------------------------
# over the test split: planted weights with known contrasts
# --------------------------------------------------------------------------------------------------


def _two_studies():
    """Study 1: sentence 0 masks the top-left cell, sentence 1 none, sentence 2 the bottom row; study 2: no finding."""
    m1 = np.zeros((3, 4, 4), bool)
    m1[0, :2, :2] = True
    m1[2, 2:, :] = True
    s1 = wm.StudyMasks(1, ["Small effusion.", "No edema.", "Basal opacity."], np.arange(3), ["effusion", "", "opacity"], m1)
    s2 = wm.StudyMasks(2, ["Lungs are clear."], np.arange(1), [""], np.zeros((1, 4, 4), bool))
    return {1: s1, 2: s2}


def test_region_weights_at_findings_and_the_finding_frequency():
    masks = _two_studies()
    weights = np.array([[0.4, 0.0, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25]])
    table = wm.region_weights_at_findings(weights, [1, 2], masks, (2, 2))
    # study 2 has no finding: left out; study 1's union covers regions 0, 2, 3
    assert table["study_id"].tolist() == [1] and table["n_findings"].tolist() == [2]
    assert table["inside"].iloc[0] == pytest.approx(1 / 3) and table["outside"].iloc[0] == 0.0
    assert table["mass"].iloc[0] == pytest.approx(1.0) and table["mass_chance"].iloc[0] == 0.75
    with pytest.raises(ValueError, match="one row per study"):
        wm.region_weights_at_findings(weights, [1], masks, (2, 2))
    freq = wm.finding_cell_frequency(list(masks.values()), (2, 2))
    np.testing.assert_allclose(freq, [[0.5, 0.0], [0.5, 0.5]])  # one of the two studies covers 0, 2, 3
    with pytest.raises(ValueError, match="no study"):
        wm.finding_cell_frequency([], (2, 2))


def test_relative_weights():
    np.testing.assert_allclose(wm.relative_weights([1.0, 3.0]), [0.5, 1.5])
    np.testing.assert_allclose(wm.relative_weights(np.full(5, 0.2)), np.ones(5))  # uniform = 1
    for bad in ([0.0, 0.0], [1.0, -1.0], [], [[1.0]]):
        with pytest.raises(ValueError, match="weights"):
            wm.relative_weights(bad)


def _limitr_record():
    # slots: [CLS], "small", "effusion", ".", "no", "edema", ".", "basal", "opacity", "."
    words = ["[CLS]", "small", "effusion", ".", "no", "edema", ".", "basal", "opacity", "."]
    word_sentence = np.array([-1, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    beta = np.full((4, 11), 0.0)  # 4 regions over 10 slots + 1 padded slot
    beta[:, :10] = 0.1
    beta[0, 1:4] = [0.2, 0.4, 0.3]  # region 0 (sentence 0's cell) attends to sentence 0
    q = np.zeros(11)
    q[:10] = [0.1, 0.1, 0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.05]
    return {"study_id": 1, "words": words, "word_sentence": word_sentence, "region_to_word": beta, "word_weights": q}


def test_limitr_region_word_table_of_planted_attention():
    masks = _two_studies()
    table = wm.limitr_region_word_table([_limitr_record()], masks, (2, 2))
    # sentence 0: region 0; sentence 2 (bottom row): its best cell is region 2, which attends uniformly
    assert table["sentence"].tolist() == [0, 2] and table["region"].tolist() == [0, 2] and table["n_words"].tolist() == [3, 3]
    w0 = np.array([0.2, 0.4, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    r0 = w0 / w0.mean()
    assert table["sentence_words"].iloc[0] == pytest.approx(r0[:3].mean()) and table["other_words"].iloc[0] == pytest.approx(r0[3:].mean())
    assert table["sentence_words"].iloc[1] == pytest.approx(1.0) and table["other_words"].iloc[1] == pytest.approx(1.0)
    assert table["category"].tolist() == ["effusion", "opacity"]


def test_limitr_aggregation_table_of_planted_weights():
    masks = _two_studies()
    rec = _limitr_record()
    table = wm.limitr_aggregation_table([rec], masks)
    q = np.array([0.1, 0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.05])  # without [CLS]
    r = q / q.mean()
    finding = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1], bool)  # sentences 0 and 2 have masks
    assert table["n_finding_words"].tolist() == [6] and table["n_other_words"].tolist() == [3]
    assert table["finding"].iloc[0] == pytest.approx(r[finding].mean()) and table["other"].iloc[0] == pytest.approx(r[~finding].mean())
    # a report whose words are all of one kind has nothing to compare
    only = {**rec, "study_id": 2, "words": rec["words"][:4], "word_sentence": np.array([-1, 0, 0, 0])}
    assert wm.limitr_aggregation_table([only], masks).empty


def test_paired_claim_uses_the_ci_of_the_differences(tmp_path):
    inside = [0.5, 0.6, 0.7, 0.55, np.nan]
    outside = [0.4, 0.45, 0.5, 0.5, 0.1]  # the NaN pair is dropped
    row = wm.paired_claim("07", "paper", "claim", "measure", "inside", inside, "outside", outside)
    d = np.array([0.1, 0.15, 0.2, 0.05])
    from localign.eval.stats import Z_95

    half = Z_95 * d.std(ddof=1) / 2
    assert row["n_a"] == row["n_b"] == 4 and row["mean_a"] == pytest.approx(0.5875) and row["mean_b"] == pytest.approx(0.4625)
    assert row["difference"] == pytest.approx(d.mean()) and row["ci_low"] == pytest.approx(d.mean() - half, rel=1e-6)
    assert row["verdict"] == "holds"
    # the same numbers as two independent samples would not show it: the pairing is what carries the evidence
    from localign.eval.claims import compare_claim

    assert compare_claim("07", "p", "c", "m", "a", [1.0, 2.0, 3.0], "b", [0.9, 1.9, 2.9])["verdict"] == "not shown"
    assert wm.paired_claim("07", "p", "c", "m", "a", [1.0, 2.0, 3.0], "b", [0.9, 1.9, 2.8])["verdict"] == "holds"
    assert wm.paired_claim("07", "p", "c", "m", "a", [1.0, 2.0], "b", [1.1, 2.2])["verdict"] == "contradicted"
    with pytest.raises(ValueError, match="pairs"):
        wm.paired_claim("07", "p", "c", "m", "a", [1.0, 2.0], "b", [1.0])
    empty = wm.paired_claim("07", "p", "c", "m", "a", [], "b", [])
    assert empty["verdict"] == "not shown" and empty["n_a"] == 0 and np.isnan(empty["difference"])
    from localign.eval.claims import write_claims

    write_claims([row, empty], tmp_path)  # both rows are valid claims rows


def test_weight_map_summary():
    weights = np.array([[0.1, 0.4], [0.4, 0.1]])
    out = wm.weight_map_summary(weights, np.array([[0.0, 0.5], [0.5, 0.0]]))
    assert out["max_relative"] == pytest.approx(1.6) and out["min_relative"] == pytest.approx(0.4)
    assert out["correlation"] == pytest.approx(1.0)
    assert wm.weight_map_summary(weights, np.array([[0.5, 0.0], [0.0, 0.5]]))["correlation"] == pytest.approx(-1.0)
    assert np.isnan(wm.weight_map_summary(np.full((2, 2), 0.25), weights)["correlation"])  # uniform weights: no r
    with pytest.raises(ValueError, match="one grid"):
        wm.weight_map_summary(weights, np.zeros(4))


def test_hit_rate_by_category_and_attention_summary():
    selection = pd.DataFrame({"category": ["a", "a", "b", ""], "scored": [True, True, True, False],
                              "hit": [True, False, True, False], "chance": [0.25, 0.25, 0.5, np.nan]})
    table = wm.hit_rate_by_category(selection)
    assert table.index.tolist() == ["a", "b", "all"] and table["sentences"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(table["hit_rate"], [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(table["chance"], [0.25, 0.5, 1 / 3])
    cols = ["word", "inside", "outside", "mass", "mass_chance", "peak_inside"]
    t = pd.DataFrame([["effusion", 0.4, 0.1, 0.5, 0.25, 1.0], ["effusion", 0.2, 0.2, 0.25, 0.25, 0.0],
                      ["opacity", 0.3, 0.1, 0.6, 0.5, 1.0]], columns=cols)
    summary = wm.attention_summary({"GLoRIA": t, "LIMITR": t.iloc[:0]})
    assert summary.index.tolist() == [("GLoRIA", "effusion"), ("GLoRIA", "opacity"), ("GLoRIA", "all")]  # an empty table adds no rows
    assert summary["n"].tolist() == [2, 1, 3]
    np.testing.assert_allclose(summary.loc[("GLoRIA", "effusion"), ["inside", "outside", "pointing"]].to_numpy(float), [0.3, 0.15, 0.5])
    np.testing.assert_allclose(summary.loc[("GLoRIA", "all"), ["inside", "mass", "pointing"]].to_numpy(float), [0.3, 0.45, 2 / 3])


# --------------------------------------------------------------------------------------------------
# wiring on tiny real runs
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tiny_prepared, tmp_path_factory):
    """1-step runs of local MI, GLoRIA and LIMITR on the tiny dataset (encoders of helpers.tiny_method)."""
    from localign.models import get_method
    from localign.train import encoder_overrides, make_train_config, pretrain
    from localign.train.runs import load_run

    from .helpers import TINY_TEXT

    runs = {}
    root = tmp_path_factory.mktemp("wm_runs")
    for preset in ("local_mi_cpc", "gloria", "limitr"):
        base = get_method(preset)
        o = encoder_overrides(base, image_arch="resnet18", image_size=64, text_model="minilm")
        o.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0,
                  "text.last_layers": min(base.text.last_layers, 2), "head.d_z": 16, "head.d_hidden": 32})
        if base.family == "mi":
            o["loss.critic_hidden"] = (32, 16)
        pretrain(make_train_config(method=preset, overrides=o, data=str(tiny_prepared), out=str(root / preset), max_steps=1,
                                   batch_size=8, progress=False))
        runs[preset] = load_run(root / preset)
    return runs


def test_masks_and_local_mi_slots_line_up_with_the_sentence_table(tiny_runs):
    from localign.eval.inference import StudyBatches
    from localign.eval.protocols.grounding import synth_sentence_masks

    run = tiny_runs["local_mi_cpc"]
    batches = StudyBatches(run, split="test", batch_size=4)
    size = run.method.image.input_size
    masks = wm.study_masks(batches.prepared, batches.study_ids, size)
    table = synth_sentence_masks(batches.prepared, "test").set_index("phrase_id")
    sentences = batches.prepared.sentences
    n_masked = 0
    for sm in masks:
        # every manifest sentence sits on its own row of the table, with the same text and image
        assert [sentences.loc[r, "sentence"] for r in sm.rows] == sm.sentences
        for m, r in enumerate(sm.rows):
            assert sm.masks[m].any() == (r in table.index)  # a mask exactly for the table's finding sentences
            if r in table.index:
                assert sm.categories[m] == table.loc[r, "category"] and sm.sentences[m] == table.loc[r, "text"]
        n_masked += int(sm.has_mask.sum())
    assert n_masked > 0
    records = wm.mi_sentence_scores(batches)
    grid = records[0]["grid"]
    assert [r["study_id"] for r in records] == batches.study_ids.tolist()
    by_id = {m.study_id: m for m in masks}
    for rec in records:
        # slot m is the m-th sentence with tokens: its [CLS] input is that sentence's tokens
        tokens = batches.dataset.tokens.sentences(rec["study_id"])
        assert all(len(tokens[i]) > 0 for i in rec["slots"]) and rec["scores"].shape[1] == grid[0] * grid[1]
    frame, summary = wm.selection_table([r["scores"] for r in records], [r["slots"] for r in records],
                                        [by_id[r["study_id"]].masks for r in records], grid, [r["study_id"] for r in records])
    assert summary["n_scored"] == int(frame["scored"].sum()) > 0 and 0 <= summary["rate"] <= 1 and 0 < summary["chance"] < 1


def test_local_mi_slot_inputs_are_the_sentences_tokens(tiny_runs):
    """The sentence-mode batch's slot m holds [CLS] + tokens of the manifest sentence slots[m] + [SEP]."""
    from localign.eval.inference import StudyBatches

    run = tiny_runs["local_mi_cpc"]
    batches = StudyBatches(run, split="test", batch_size=4)
    batch = next(iter(batches))
    for b, sid in enumerate(batch.study_ids.tolist()):
        tokens = batches.dataset.tokens.sentences(sid)
        slots = wm.token_sentence_index(tokens, run.method.text_input.max_sentences)
        for m, i in enumerate(slots):
            ids = batch.text.input_ids[b, m][batch.text.attention_mask[b, m].bool()].tolist()
            assert ids[1:-1] == tokens[i][: len(ids) - 2]


def test_word_attention_records_of_gloria_and_limitr(tiny_runs):
    from localign.eval.inference import StudyBatches

    for kind, key in (("gloria", "attention"), ("limitr", "word_to_region")):
        run = tiny_runs[kind]
        batches = StudyBatches(run, split="test", n_studies=6, batch_size=4)
        records = wm.word_attention_records(batches, kind)
        masks = {m.study_id: m for m in wm.study_masks(batches.prepared, batches.study_ids, run.method.image.input_size)}
        for rec in records:
            n = len(rec["words"])
            assert rec["words"][0] == "[CLS]" and n == int(rec["word_mask"].sum())
            np.testing.assert_allclose(rec[key][:n].sum(-1), 1.0, rtol=1e-4)
            sm = masks[rec["study_id"]]
            # each word lies in the sentence named for it
            for word, s in zip(rec["words"][1:], rec["word_sentence"][1:]):
                if word.isalpha():
                    assert word in sm.sentences[s].lower()
        table = wm.finding_word_table(records, masks, records[0]["grid"], key=key)
        assert set(table.columns) >= {"inside", "outside", "mass", "peak_inside"}
        if kind == "limitr":
            rec = records[0]
            n = len(rec["words"])
            np.testing.assert_allclose(rec["region_to_word"][:, :n].sum(-1), 1.0, rtol=1e-4)
            np.testing.assert_allclose(rec["word_weights"][:n].sum(), 1.0, rtol=1e-4)
            shade = wm.word_shading(rec["words"], rec["region_to_word"][0][:n])
            assert shade["weight"].max() == pytest.approx(1.0)
            region_words = wm.limitr_region_word_table(records, masks, records[0]["grid"])
            n_finding = sum(int(masks[r["study_id"]].has_mask.sum()) for r in records)
            assert 0 < len(region_words) <= n_finding and (region_words["sentence_words"] > 0).all()
            aggregation = wm.limitr_aggregation_table(records, masks)
            assert set(aggregation["study_id"]) <= {r["study_id"] for r in records} and (aggregation["finding"] > 0).all()


# --------------------------------------------------------------------------------------------------
# the models' read-only accessors: the quantities their training and retrieval compute
# --------------------------------------------------------------------------------------------------

ACCESSOR_REPORTS = [["Heart size is normal.", "There is a small left pleural effusion."], ["Right lower lobe consolidation."],
                    ["Lungs are clear.", "No pneumothorax.", "Mild edema."]]


def _accessor_batch(tokenizer, method):
    from localign.data.text import SpecialTokens, collate_reports
    from localign.data.tokenize import tokenize_sentences

    ids = [tokenize_sentences(r, tokenizer, method.text_input.max_length) for r in ACCESSOR_REPORTS]
    text = collate_reports(ids, method.text_input, SpecialTokens.from_tokenizer(tokenizer))
    return torch.randn(len(ACCESSOR_REPORTS), 1, method.image.input_size, method.image.input_size), text


def test_limitr_pair_attention_is_what_the_pair_scores_compute(tokenizer):
    """S_cap and S_img of (image b, report b) equal the diagonals of pair_scores; α and β are distributions."""
    from localign.models import build_model

    from .helpers import tiny_method

    torch.manual_seed(0)
    model = build_model(tiny_method("limitr")).eval()
    images, text = _accessor_batch(tokenizer, model.config)
    with torch.no_grad():
        out = model.pair_attention(images, text)
        s_cap, s_img = model.pair_scores(model.encode_images(images), model.encode_reports(text))
    torch.testing.assert_close(out["score_caption"], torch.diagonal(s_cap), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["score_image"], torch.diagonal(s_img), atol=1e-5, rtol=1e-4)
    mask = out["word_mask"]
    k = out["grid"][0] * out["grid"][1]
    assert out["word_to_region"].shape == (3, mask.shape[1], k) and out["region_to_word"].shape == (3, k, mask.shape[1])
    torch.testing.assert_close(out["word_to_region"].sum(-1), mask.float())  # α: each valid word over the regions
    torch.testing.assert_close(out["region_to_word"].sum(-1), torch.ones(3, k))  # β: each region over the valid words
    assert not out["region_to_word"].masked_select(~mask[:, None, :].expand(-1, k, -1)).any()
    torch.testing.assert_close(out["word_weights"].sum(-1), torch.ones(3))
    assert not out["word_weights"][~mask].any()


def test_gloria_word_attention_is_the_training_losss_attention(tokenizer):
    """GLoRIA's α of each image with its own report: gloria_local_scores' attn[b, b]."""
    from localign.losses import gloria_local_scores
    from localign.models import build_model

    from .helpers import tiny_method

    torch.manual_seed(0)
    model = build_model(tiny_method("gloria")).eval()
    images, text = _accessor_batch(tokenizer, model.config)
    with torch.no_grad():
        out = model.word_attention(images, text)
        img, rep = model.encode_images(images), model.encode_reports(text)
        _, attn = gloria_local_scores(rep.words, rep.word_mask, img.local, model.config.loss.temp1)
    for b in range(3):
        torch.testing.assert_close(out["attention"][b], attn[b, b], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["attention"].sum(-1), rep.word_mask.float())


def test_local_mi_sentence_region_scores_are_the_critics_own_pair_scores(tokenizer):
    """scores[b, m, k] = f(region k of image b, sentence m of report b); the mean over sentences of
    the max over regions is the diagonal of the retrieval similarity."""
    from localign.models import build_model

    from .helpers import tiny_method

    torch.manual_seed(0)
    model = build_model(tiny_method("local_mi_cpc")).eval()
    images, text = _accessor_batch(tokenizer, model.config)
    with torch.no_grad():
        out = model.sentence_region_scores(images, text)
        img, rep = model.encode_images(images), model.encode_reports(text)
        pairs = model.critic.pairwise_local(img.local, rep.local, rep.local_mask)  # [B, B, K, M]
        sim = model.similarity(img, rep)
    mask = out["sentence_mask"]
    assert mask.sum(1).tolist() == [2, 1, 3]
    for b in range(3):
        torch.testing.assert_close(out["scores"][b][mask[b]], pairs[b, b].T[mask[b]], atol=1e-5, rtol=1e-4)
    best = out["scores"].amax(-1)
    torch.testing.assert_close((best * mask).sum(1) / mask.sum(1), torch.diagonal(sim), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="local MI"):
        build_model(tiny_method("global_mi_cpc")).sentence_region_scores(images, text)

"""Dataset-card tables and figures on a tiny SynthCXR dataset."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from localign.data import layout
from localign.data.manifest import load_prepared
from localign.viz import data as card


def test_tables_agree_with_the_prepared_files(tiny_prepared):
    data = load_prepared(tiny_prepared)
    sizes = card.split_sizes(data)
    assert sizes["studies"].sum() == len(data.manifest) and sizes["frontal images"].sum() == len(data.images)
    prev = card.label_prevalence(data)
    assert set(prev["label"]) == set(layout.CHEXPERT_LABELS)
    row = prev[(prev["label"] == "Edema") & (prev["split"] == "train")].iloc[0]
    train = data.labels[data.labels["split"] == "train"]["Edema"]
    assert row["positive"] == (train == 1).sum() and row["negative"] == (train == 0).sum() and row["blank"] == train.isna().sum()
    co = card.cooccurrence(data)
    assert np.allclose(np.diag(co)[np.diag(co) > 0], 1.0) and ((co >= 0) & (co <= 1)).all().all()
    counts = card.filtering_counts(data)
    assert {"table", "step", "kept", "removed", "reason"} == set(counts.columns)
    facts = card.synthcxr_facts(data)
    assert facts.loc["studies", "value"] == 80 and facts.loc["size on disk (MB)", "value"] > 0


def test_text_statistics_counts(tiny_prepared, tokenizer):
    data = load_prepared(tiny_prepared)
    stats = card.text_statistics(data, tokenizer)
    assert (stats["sentences"].to_numpy() == data.manifest["sentences"].map(len).to_numpy()).all()
    first = tokenizer(data.manifest["text"].iloc[0], add_special_tokens=True)["input_ids"]
    assert stats["wordpieces"].iloc[0] == len(first)


def test_figures(tiny_prepared, tokenizer):
    data = load_prepared(tiny_prepared)
    fig = card.plot_examples(data, n=2, seed=0)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    # the image panel shows the study's first frontal image and one contour per finding mask
    ex = card.pick_examples(data, n=2, seed=0)
    n_masks = data.sentences[(data.sentences["study_id"] == ex["study_id"].iloc[0]) & (data.sentences["kind"] == "finding")
                             & (data.sentences["dicom_id"] == ex["dicom_ids"].iloc[0][0])]["mask"].dropna().nunique()
    assert len(fig.axes[0].collections) >= min(n_masks, 1)
    for f in (card.plot_label_prevalence(data), card.plot_cooccurrence(data), card.plot_text_statistics(card.text_statistics(data, tokenizer))):
        assert isinstance(f, Figure)

"""localign.eval.inference: a run's representations of a split, batch by batch, joined."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from localign.data.manifest import load_prepared
from localign.eval.inference import StudyBatches, collect, encode_split
from localign.models.embeddings import ReportEmbeddings, cat_padded
from localign.models import get_method
from localign.train import encoder_overrides, make_train_config, pretrain
from localign.train.runs import load_run

from .helpers import TINY_TEXT


def test_cat_padded_pads_every_axis_but_the_batch():
    a = torch.ones(2, 3, 4)
    b = 2 * torch.ones(1, 2, 5)
    out = cat_padded([a, b])
    assert out.shape == (3, 3, 5)
    assert torch.equal(out[:2, :3, :4], a) and out[:2, :, 4].abs().sum() == 0
    assert torch.equal(out[2, :2, :5], b[0]) and out[2, 2].abs().sum() == 0
    masks = cat_padded([torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)])
    assert masks.dtype == torch.bool and masks.tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(cat_padded([torch.arange(2), torch.arange(3)]), torch.tensor([0, 1, 0, 1, 2]))
    with pytest.raises(ValueError, match="numbers of dims"):
        cat_padded([torch.ones(1, 2), torch.ones(1, 2, 3)])
    with pytest.raises(ValueError, match="no tensors"):
        cat_padded([])


def test_report_embeddings_cat_pads_words_and_masks():
    a = ReportEmbeddings(words=torch.ones(1, 2, 3), word_mask=torch.ones(1, 2, dtype=torch.bool))
    b = ReportEmbeddings(words=torch.ones(2, 4, 3), word_mask=torch.ones(2, 4, dtype=torch.bool))
    joined = ReportEmbeddings.cat([a, b])
    assert joined.words.shape == (3, 4, 3) and joined.word_mask[0].tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def tiny_lovt(tiny_prepared, tmp_path_factory):
    overrides = encoder_overrides(get_method("lovt"), image_arch="resnet18", image_size=64, text_model="minilm")
    overrides.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0, "text.last_layers": 1,
                      "head.d_z": 16, "head.d_hidden": 32})
    out = tmp_path_factory.mktemp("run") / "lovt_tiny"
    pretrain(make_train_config(method="lovt", overrides=overrides, data=str(tiny_prepared), out=str(out), max_steps=1,
                               batch_size=8, progress=False))
    return load_run(out)


def test_batches_cover_the_split_in_order_and_results_do_not_depend_on_the_batch_size(tiny_lovt, tiny_prepared):
    test_ids = load_prepared(tiny_prepared).split("test")["study_id"].to_numpy()
    small = StudyBatches(tiny_lovt, split="test", batch_size=3)
    assert len(small) == len(test_ids) and (small.study_ids == test_ids).all()
    assert torch.equal(torch.cat([b.study_ids for b in small]), torch.tensor(test_ids))
    first = StudyBatches(tiny_lovt, split="test", n_studies=5, batch_size=2)
    assert (first.study_ids == test_ids[:5]).all()

    def lovt(model, batch):
        f = model.local_features(batch.images, batch.text)
        return {field.name: getattr(f, field.name) for field in dataclasses.fields(f)}

    whole = collect(StudyBatches(tiny_lovt, split="test", batch_size=64), lovt)
    split = collect(small, lovt)
    assert split["grid"] == whole["grid"] == (2, 2)
    assert split["z_image"].shape == (len(test_ids), 4, 16)
    # per-report axes padded to the longest report: the same values whatever the batches were
    for name in ("z_image", "report_to_image", "z_image_global"):
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-4)
    mask = whole["sentence_mask"]
    assert mask.dtype == torch.bool and split["sentence_mask"].shape == mask.shape and torch.equal(split["sentence_mask"], mask)
    assert split["alignment_scores"].shape[-1] == mask.shape[1]
    torch.testing.assert_close(split["image_to_report"][mask], whole["image_to_report"][mask], atol=1e-5, rtol=1e-4)

    images, reports = encode_split(small)
    assert images.global_embedding.shape[0] == reports.global_embedding.shape[0] == len(test_ids)
    torch.testing.assert_close(images.global_embedding, whole["z_image_global"], atol=1e-5, rtol=1e-4)


def test_bad_arguments_are_named(tiny_lovt):
    with pytest.raises(ValueError, match="n_studies"):
        StudyBatches(tiny_lovt, n_studies=0)
    with pytest.raises(ValueError, match="batch_size"):
        StudyBatches(tiny_lovt, batch_size=0)

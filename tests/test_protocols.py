"""Downstream protocols (localign.eval.protocols) and ``localign evaluate``, on one tiny SynthCXR run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from localign.data import layout
from localign.data.manifest import load_prepared
from localign.data.sources import find_table, read_chexpert_labels
from localign.data.transforms import ImageGeometry
from localign.eval.grounding import boxes_to_mask, cnr, map_to_original, smooth_similarity
from localign.metrics import dice_dataset, dice_per_image
from localign.eval.protocols import (
    EvalConfig,
    Preprocessing,
    SegmentationConfig,
    StoreCache,
    UNet,
    evaluate_runs,
    feature_pyramid,
    grounding_protocol,
    mask_to_input,
    pathology_table,
    phrase_cnr,
    random_init_encoder,
    resolve_tasks,
    soft_dice_loss,
    train_classifier,
    train_linear_segmentation,
)
from localign.eval.protocols import baselines as B
from localign.eval.protocols.classification import FrozenViews
from localign.eval.protocols.common import fraction_subset
from localign.eval.protocols.features import augmented_batch
from localign.eval.protocols.segmentation import LinearSegmentationHead, segmentation_table, target_masks
from localign.eval.stats import TIDY_KEY, validate_tidy
from localign.models.config import ImageEncoderConfig
from localign.models.image import ImageEncoder

from .helpers import TINY_TEXT

FAST = {"probe.max_iter": 300, "classifier_frozen.epochs": 1, "classifier_tuned.max_steps": 3, "segmentation.epochs": 3,
        "unet.max_steps": 3, "unet.warmup_steps": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # two threads on a busy two-core machine are several times slower than one (oversubscription)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory):
    from localign.data.prepare import prepare_dataset, synthcxr_config
    from localign.data.synthcxr import SynthCXRConfig, generate

    base = tmp_path_factory.mktemp("protocols")
    generate(base / "synthcxr", SynthCXRConfig(n_studies=120, image_size=64, seed=0, n_rsna=40), workers=1, progress=False)
    return prepare_dataset(synthcxr_config(base / "synthcxr"), base / "prepared", workers=1, progress=False)


@pytest.fixture(scope="module")
def prepared(prepared_root):
    return load_prepared(prepared_root)


@pytest.fixture(scope="module")
def run_dir(prepared_root, tmp_path_factory):
    from localign.models import get_method
    from localign.train import encoder_overrides, make_train_config, pretrain

    base = get_method("convirt")
    overrides = encoder_overrides(base, image_arch="resnet18", image_size=64, text_model="minilm")
    overrides.update({"text.random_init": True, "text.tiny": TINY_TEXT, "text.freeze_layers": 0, "text.last_layers": 1,
                      "head.d_z": 16, "head.d_hidden": 32})
    out = tmp_path_factory.mktemp("run") / "convirt_tiny"
    pretrain(make_train_config(method="convirt", overrides=overrides, data=str(prepared_root), out=str(out), max_steps=2, batch_size=8,
                         progress=False))
    return out


@pytest.fixture(scope="module")
def loaded(run_dir):
    from localign.train import load_run

    return load_run(run_dir)


@pytest.fixture(scope="module")
def prep(loaded):
    return loaded.preprocessing


@pytest.fixture(scope="module")
def evaluation(run_dir, tmp_path_factory, monkeypatch_module):
    """One evaluate_runs call shared by several tests: probe, retrieval, grounding + baselines."""
    def offline(arch):
        raise RuntimeError(f"ImageNet weights for {arch} are not cached (simulated offline machine)")

    monkeypatch_module.setattr("localign.models.image.imagenet_state_dict", offline)
    out = tmp_path_factory.mktemp("eval") / "eval.csv"
    config = EvalConfig().with_overrides(**FAST)
    df = evaluate_runs([run_dir], tasks="probe,retrieval,grounding", fractions=(0.5, 1.0), seeds=(0, 1),
                       baselines=("random", "imagenet"), out=out, config=config, progress=False)
    return df, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# --------------------------------------------------------------------------------------------------
# configuration and bad input
# --------------------------------------------------------------------------------------------------
def test_tasks_resolve_aliases_and_reject_unknown_names():
    assert resolve_tasks("seg,probe") == ("probe", "seg_linear", "seg_unet_frozen", "seg_unet_finetune")
    assert resolve_tasks(["edema"]) == ("edema_frozen", "edema_tuned")
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        resolve_tasks("probe,segmentation")
    with pytest.raises(ValueError, match="fractions"):
        EvalConfig(fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown baseline"):
        EvalConfig(baselines=("random", "chexpert"))
    with pytest.raises(ValueError, match="unknown field"):
        EvalConfig().with_overrides(**{"classifier_tuned.epochz": 3})
    assert EvalConfig().with_overrides(**{"unet.epochs": 7, "seg_targets": ["rsna"]}).unet.epochs == 7


def test_bad_run_folders_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_runs([tmp_path / "missing"], tasks="probe")
    (tmp_path / "notarun").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        evaluate_runs([tmp_path / "notarun"], tasks="probe")
    with pytest.raises(ValueError, match="unknown task 'probes'"):
        evaluate_runs([tmp_path / "notarun"], tasks="probes")


def test_bad_data_root_gives_clear_errors(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_runs([run_dir], tasks="probe", data=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a prepared dataset"):
        evaluate_runs([run_dir], tasks="probe", data=tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# labels and label fractions
# --------------------------------------------------------------------------------------------------
def test_pathology_labels_blank_negative_uncertain_masked(prepared):
    table = pathology_table(prepared)
    raw = read_chexpert_labels(find_table(prepared.mimic_jpg_root, layout.MIMIC_CHEXPERT)).set_index("study_id")
    raw = raw.loc[table["study_id"], list(layout.PATHOLOGY9)].to_numpy()
    ours = table[list(layout.PATHOLOGY9)].to_numpy()
    assert np.all(np.isnan(ours[raw == -1]))
    assert np.all(ours[np.isnan(raw)] == 0)
    assert np.array_equal(ours[raw == 1], np.ones(int((raw == 1).sum())))
    assert np.array_equal(ours[raw == 0], np.zeros(int((raw == 0).sum())))
    assert len(table) == len(prepared.images)


def test_label_fractions_are_whole_patients_nested_and_reproducible(prepared):
    train = pathology_table(prepared).query("split == 'train'").reset_index(drop=True)
    a = fraction_subset(train, 0.3, seed=1, patient_col="subject_id")
    b = fraction_subset(train, 0.3, seed=1, patient_col="subject_id")
    c = fraction_subset(train, 0.3, seed=2, patient_col="subject_id")
    small = fraction_subset(train, 0.1, seed=1, patient_col="subject_id")
    assert a.equals(b)
    assert set(a["dicom_id"]) != set(c["dicom_id"])
    assert set(small["dicom_id"]) <= set(a["dicom_id"])
    chosen = set(a["subject_id"])
    rest = train[~train["dicom_id"].isin(a["dicom_id"])]
    assert not chosen & set(rest["subject_id"])  # no patient split between drawn and not drawn
    assert len(a) >= np.ceil(0.3 * len(train))


# --------------------------------------------------------------------------------------------------
# evaluate_runs: tidy rows, baselines, retrieval pool, grounding
# --------------------------------------------------------------------------------------------------
def test_evaluate_runs_tidy_rows_one_per_key(evaluation, run_dir):
    df, out = evaluation
    validate_tidy(df)
    assert not df.duplicated(subset=list(TIDY_KEY)).any()
    probe = df[(df["task"] == "probe") & (df["method"] == "convirt")]
    assert sorted(set(zip(probe["fraction"], probe["seed"]))) == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    per_rep = probe.groupby(["fraction", "seed"])["metric"].apply(lambda m: sorted(m))
    expected = sorted([*layout.PATHOLOGY9, "macro", "n_train", "n_train_patients", "log10_c", "val_macro"])
    assert all(m == expected for m in per_rep)
    # n_train reports the patient-level draw: fraction 1 uses every training image
    n_full = probe[(probe["fraction"] == 1.0) & (probe["metric"] == "n_train")]["value"].unique()
    n_half = probe[(probe["fraction"] == 0.5) & (probe["metric"] == "n_train")]["value"]
    assert len(n_full) == 1 and (n_half < n_full[0]).all()
    on_disk = pd.read_csv(out)
    assert len(on_disk) == len(df)
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["config"]["tasks"] == ["probe", "retrieval", "grounding"]
    assert {t["task"] for t in info["timings"] if t["method"] == "convirt"} == {"probe", "retrieval", "grounding:ms_cxr",
                                                                               "grounding:synth_masks"}
    assert info["runs"][0]["run_dir"] == str(run_dir.resolve())


def test_baselines_random_present_imagenet_skipped_with_reason(evaluation):
    df, out = evaluation
    random_probe = df[(df["method"] == "random_init") & (df["task"] == "probe")]
    assert len(random_probe) and set(random_probe["run"]) == {"-"}
    assert "imagenet_init" not in set(df["method"])
    skipped = df.attrs["skipped"]
    reasons = [s["reason"] for s in skipped if s["method"] == "imagenet_init"]
    assert len(reasons) == 1 and "ImageNet weights unavailable" in reasons[0] and "simulated offline" in reasons[0]
    # text-based tasks do not apply to image-only baselines, and say so
    assert {s["task"] for s in skipped if s["method"] == "random_init"} == {"retrieval", "grounding:ms_cxr", "grounding:synth_masks"}
    info = json.loads(out.with_suffix(".json").read_text())
    assert any(s["method"] == "imagenet_init" for s in info["skipped"])


def test_retrieval_rows_carry_pool_size(evaluation, prepared, loaded, prep):
    from localign.eval.protocols import retrieval_protocol

    df, _ = evaluation
    r = df[df["task"] == "retrieval"].set_index("metric")["value"]
    n_test = int((prepared.manifest["split"] == "test").sum())
    assert r["pool_size"] == n_test and r["n_pairs"] == n_test and r["n_dropped"] == 0
    assert r["chance_R@1"] == pytest.approx(100.0 / n_test)
    assert 0 <= r["i2t_R@1"] <= 100
    chunked = retrieval_protocol(loaded.model, prep, prepared, pool=3, progress=False)[0].metrics
    assert chunked["pool_size"] == 3 and chunked["n_chunks"] == n_test // 3 and chunked["n_dropped"] == n_test % 3


def test_probe_is_deterministic_given_seeds(evaluation, run_dir):
    df, _ = evaluation
    again = evaluate_runs([run_dir], tasks="probe", fractions=(0.5,), seeds=(1,), baselines=(),
                          config=EvalConfig().with_overrides(**FAST), progress=False)
    first = df[(df["task"] == "probe") & (df["method"] == "convirt") & (df["fraction"] == 0.5) & (df["seed"] == 1)]
    merged = first.merge(again, on=list(TIDY_KEY), suffixes=("", "_again"))
    assert len(merged) == len(first)
    assert np.allclose(merged["value"], merged["value_again"], equal_nan=True)
    # the probe's own seeds replace the evaluation's for the probe alone, with the same values per seed
    own = evaluate_runs([run_dir], tasks="probe", fractions=(0.5,), seeds=(0,), baselines=(), progress=False,
                        config=EvalConfig().with_overrides(**FAST, **{"probe.seeds": [1, 4]}))
    assert sorted(own["seed"].unique()) == [1, 4]
    same = own[own["seed"] == 1].merge(first, on=list(TIDY_KEY), suffixes=("", "_first"))
    assert len(same) == len(first) and np.allclose(same["value"], same["value_first"], equal_nan=True)
    with pytest.raises(ValueError, match="ProbeConfig.seeds"):
        EvalConfig().with_overrides(**{"probe.seeds": [1, 1]})


# --------------------------------------------------------------------------------------------------
# grounding
# --------------------------------------------------------------------------------------------------
def test_phrase_cnr_on_hand_built_map():
    # a 4x4 grid whose top-left 2x2 cells are hot, on a 40x32 image padded to 40x40 (4 columns each side)
    grid = np.zeros((4, 4))
    grid[:2, :2] = 1.0
    geometry = ImageGeometry("pad_resize", size=16)
    box_hot = boxes_to_mask([[0, 0, 16, 20]], 40, 32)  # original pixels under the hot cells (x 0..16 = padded 4..20)
    box_cold = boxes_to_mask([[16, 20, 16, 20]], 40, 32)
    hot, full = phrase_cnr(grid, (40, 32), box_hot, geometry, sigma=0.0)
    cold, _ = phrase_cnr(grid, (40, 32), box_cold, geometry, sigma=0.0)
    assert full.shape == (40, 32) and not np.isnan(full).any()
    assert full[5, 5] == pytest.approx(1.0) and full[35, 28] == pytest.approx(0.0)
    assert hot > 1.5 > cold
    # the same value as the metric pieces composed by hand, and smoothing lowers the contrast
    assert hot == pytest.approx(cnr(map_to_original(grid, (40, 32), geometry), box_hot))
    smoothed, _ = phrase_cnr(grid, (40, 32), box_hot, geometry, sigma=1.5)
    assert smoothed == pytest.approx(cnr(map_to_original(smooth_similarity(grid, 1.5), (40, 32), geometry), box_hot))
    assert 0 < smoothed < hot


def test_grounding_protocol_scores_each_phrase_against_its_boxes(loaded, prep, prepared, monkeypatch):
    h, w = 4, 4
    fixed = torch.arange(h * w, dtype=torch.float32).reshape(h, w) / (h * w)  # a ramp: known, non-constant

    def fake_similarity(images, text):
        return fixed.expand(images.shape[0], h, w).clone()

    monkeypatch.setattr(loaded.model, "region_text_similarity", fake_similarity)
    result = grounding_protocol(loaded.model, prep, prepared, source="ms_cxr", split="all", progress=False)[0]
    details = result.details.set_index("phrase_id")
    table = prepared.ms_cxr.set_index("phrase_id")
    assert len(details) == len(table)
    geometry = ImageGeometry("pad_resize", size=prep.input_size)
    for pid, row in table.iloc[:10].iterrows():
        size = (int(row["image_height"]), int(row["image_width"]))
        expected, _ = phrase_cnr(fixed.numpy(), size, boxes_to_mask(row["boxes"], *size), geometry, sigma=1.5)
        assert details.loc[pid, "cnr"] == pytest.approx(expected)
    assert result.metrics["overall"] == pytest.approx(details["cnr"].mean())
    assert result.metrics["overall/count"] == len(details)
    for category, group in details.groupby("category"):
        assert result.metrics[category] == pytest.approx(group["cnr"].mean())


def test_synth_mask_grounding_uses_exact_masks(loaded, prep, prepared):
    result = grounding_protocol(loaded.model, prep, prepared, source="synth_masks", split="test", progress=False)[0]
    details = result.details
    assert len(details) > 0 and (details["region_fraction"] > 0).all() and (details["region_fraction"] < 1).all()
    assert set(details["category"]) <= {"consolidation", "effusion", "pneumothorax", "atelectasis", "nodule", "cardiomegaly", "edema", "device"}
    assert np.isfinite(details["cnr"]).mean() > 0.9


# --------------------------------------------------------------------------------------------------
# segmentation
# --------------------------------------------------------------------------------------------------
def test_masks_follow_the_image_geometry():
    mask = np.zeros((40, 20), dtype=bool)  # a tall image: padded by 10 columns on each side
    mask[5:15, 2:8] = True
    out = mask_to_input(mask, 40).numpy()
    assert out.shape == (40, 40) and out.sum() == mask.sum()
    assert np.array_equal(np.argwhere(out), np.argwhere(mask) + [0, 10])


def test_perfect_predictor_scores_dice_one_and_linear_head_shape(prepared, prep):
    stores = StoreCache(progress=False)
    rows = segmentation_table(prepared, "synth_opacity").query("split == 'train'").reset_index(drop=True)
    masks = target_masks(rows, stores.get(rows["path"], prep.input_size), progress=False)
    assert masks.shape == (len(rows), prep.input_size, prep.input_size) and masks.any()
    assert dice_dataset(masks.float(), masks) == 1.0
    assert np.all(dice_per_image(masks.float(), masks) == 1.0)
    assert soft_dice_loss(masks.float(), masks).item() == pytest.approx(0.0, abs=1e-6)
    head = LinearSegmentationHead(512, prep.input_size)
    assert head(torch.zeros(3, 512, 2, 2)).shape == (3, 1, prep.input_size, prep.input_size)
    # a target that is linearly decodable from the maps is learnt: a 1x1 conv on (2·mask − 1) at full resolution
    maps = (2.0 * masks.float() - 1.0)[:, None]
    fast = SegmentationConfig(epochs=30, batch_size=16, lr=0.1)  # a few hundred Adam steps
    trained, info = train_linear_segmentation((maps, masks), (maps, masks), prep.input_size, config=fast, progress=False)
    probs = torch.sigmoid(trained(maps))[:, 0].detach()
    assert probs.shape == masks.shape
    assert dice_dataset(probs, masks) > 0.99 and info["val_dice"] > 0.99


def test_soft_dice_loss_values():
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert soft_dice_loss(t, t).item() == pytest.approx(0.0)
    assert soft_dice_loss(1 - t, t).item() == pytest.approx(1.0)
    p = torch.full((1, 4), 0.5, requires_grad=True)
    loss = soft_dice_loss(p, t)
    assert loss.item() == pytest.approx(1 - 2 * 1.0 / (2.0 + 2.0))
    empty = soft_dice_loss(p, torch.zeros(1, 4))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="differ"):
        soft_dice_loss(p, torch.zeros(1, 5))


@pytest.mark.parametrize(("arch", "channels", "widths"), [
    ("resnet18", [512, 256, 128, 64, 64, 3], [256, 128, 64, 32, 16]),
    ("resnet50", [2048, 1024, 512, 256, 64, 3], [1024, 512, 256, 128, 64]),  # LoVT's ResUNet widths
])
def test_unet_skips_follow_the_resnet_stages(arch, channels, widths):
    encoder = ImageEncoder(ImageEncoderConfig(arch=arch, weights=None, input_size=64)).eval()
    with torch.no_grad():
        pyramid = feature_pyramid(encoder, torch.zeros(2, 1, 64, 64))
    assert list(pyramid) == ["layer4", "layer3", "layer2", "layer1", "stem.2", "input"]
    assert [m.shape[1] for m in pyramid.values()] == channels
    assert [m.shape[-1] for m in pyramid.values()] == [2, 4, 8, 16, 32, 64]
    unet = UNet(encoder, 64).eval()
    assert [b.up.out_channels for b in unet.decoder.blocks] == widths
    with torch.no_grad():
        assert unet(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 64, 64)


# --------------------------------------------------------------------------------------------------
# classifier re-training and baselines
# --------------------------------------------------------------------------------------------------
def test_classifier_frozen_keeps_encoder_tuned_trains_a_copy(prepared, prep, loaded):
    encoder = loaded.model.image_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    table = pathology_table(prepared)
    stores = StoreCache(progress=False)
    data = {s: (stores.get(rows["path"], prep.input_size), rows[list(layout.PATHOLOGY9)].to_numpy(float))
            for s, rows in table.groupby("split")}
    fast = EvalConfig().with_overrides(**FAST)
    views = FrozenViews(encoder, prep, fast.classifier_frozen.augment, progress=False)
    frozen, info = train_classifier(encoder, prep, data["train"], data["validate"], kind="multilabel", mode="frozen",
                                    class_names=layout.PATHOLOGY9, config=fast.classifier_frozen, seed=0, progress=False, views=views)
    tuned, _ = train_classifier(encoder, prep, data["train"], data["validate"], kind="multilabel", mode="tuned",
                                class_names=layout.PATHOLOGY9, config=fast.classifier_tuned, seed=0, progress=False)
    # the cached features of an augmented view are exactly what the frozen encoder computes on it
    store = data["train"][0]
    with torch.no_grad():
        direct = encoder.eval()(prep.normalize_batch(augmented_batch(store, [0, 1, 2], fast.classifier_frozen.augment, 0))).pooled
    assert torch.allclose(views.augmented(store, 0)[:3], direct, atol=1e-5)
    assert not torch.allclose(views.augmented(store, 0)[:3], views.clean(store)[:3])
    cycled = FrozenViews(encoder, prep, fast.classifier_frozen.augment, n_views=2, progress=False)
    assert cycled.augmented(store, 2) is cycled.augmented(store, 0) and torch.equal(cycled.augmented(store, 0), views.augmented(store, 0))
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.equal(frozen.encoder.state_dict()[k], before[k]) for k in before)
    assert any(not torch.equal(tuned.encoder.state_dict()[k], before[k]) for k in weights)
    assert all(torch.equal(encoder.state_dict()[k], before[k]) for k in before)  # the caller's encoder is untouched
    assert info["best_epoch"] == 0  # one epoch (FAST)


def test_edema_and_pathology9_classifier_results(prepared, prep, loaded):
    from localign.eval.protocols import classifier_protocol

    fast = EvalConfig().with_overrides(**FAST)
    edema = classifier_protocol(loaded.model.image_encoder, prep, prepared, task="edema", mode="frozen", seeds=(0,),
                                config=fast.classifier_frozen, progress=False)
    assert len(edema) == 1 and edema[0].fraction == 1.0
    m = edema[0].metrics
    assert {"0 vs 1,2,3", "0,1 vs 2,3", "0,1,2 vs 3", "mean", "n_train", "n_test", "best_epoch", "val_score", "steps"} == set(m)
    assert m["n_test"] == int((prepared.edema["split"] == "test").sum())
    path9 = classifier_protocol(loaded.model.image_encoder, prep, prepared, task="pathology9", mode="tuned", seeds=(3,),
                                config=fast.classifier_tuned, progress=False)
    assert path9[0].seed == 3 and set(layout.PATHOLOGY9) <= set(path9[0].metrics)
    assert path9[0].metrics["steps"] == 3  # the step budget ends training


def test_random_baseline_is_seeded_and_imagenet_failure_is_reported(monkeypatch):
    config = ImageEncoderConfig(arch="resnet18", weights="imagenet", input_size=64)
    a, b, c = random_init_encoder(config, 0), random_init_encoder(config, 0), random_init_encoder(config, 1)
    key = "stages.layer1.0.conv1.weight"
    assert a.config.weights is None
    assert torch.equal(a.state_dict()[key], b.state_dict()[key]) and not torch.equal(a.state_dict()[key], c.state_dict()[key])

    def offline(arch):
        raise RuntimeError("not cached and no network")

    monkeypatch.setattr("localign.models.image.imagenet_state_dict", offline)
    with pytest.raises(B.BaselineUnavailable, match="not cached and no network"):
        B.imagenet_encoder(config)
    with pytest.raises(B.BaselineUnavailable, match="no ImageNet weights"):
        B.imagenet_encoder(ImageEncoderConfig(arch="liao_resnet6", in_channels=1, global_pool="avg2x2_flatten", input_size=64))


# --------------------------------------------------------------------------------------------------
# zero-shot classification
# --------------------------------------------------------------------------------------------------
def _prompt_file(tmp_path, labels):
    path = tmp_path / "prompts.yaml"
    path.write_text("classes:\n" + "".join(f"  {c}: {{severity: ['', mild], finding: [{c.lower()}]}}\n" for c in labels))
    return path


def test_zero_shot_on_the_tiny_run_balanced_set_and_baseline_skip(run_dir, prepared, tmp_path):
    from localign.eval.protocols.zero_shot import single_label_studies
    from localign.eval.tables import summary_tables

    # the tiny test split (about a dozen studies) has few single-label studies of the five
    # competition findings, so this test classifies the two labels it has most of
    classes = ["No Finding", "Lung Opacity"]
    counts = single_label_studies(prepared, classes)["label"].value_counts()
    assert all(counts.get(c, 0) > 0 for c in classes), counts.to_dict()
    n = min(200, min(int(counts[c]) for c in classes))
    config = EvalConfig().with_overrides(**{"zero_shot.classes": classes, "zero_shot.prompts": str(_prompt_file(tmp_path, classes))})
    df = evaluate_runs([run_dir], tasks="zero_shot", seeds=(0, 1), baselines=("random",), config=config,
                       out=tmp_path / "zs.csv", progress=False)
    z = df[df["task"] == "zero_shot"]
    assert set(z["method"]) == {"convirt"} and set(z["seed"]) == {0, 1}
    for _, rep in z.groupby("seed"):
        m = rep.set_index("metric")["value"]
        assert m["n_per_class"] == n and m["n_images"] == n * len(classes) and m["chance_accuracy"] == 0.5
        assert m["n_prompts"] == 4 and set(classes) <= set(m.index) and 0 <= m["macro"] <= 1
        assert m["accuracy"] * m["n_images"] == pytest.approx(round(m["accuracy"] * m["n_images"]))  # k of n_images right
    skipped = [s for s in df.attrs["skipped"] if s["method"] == "random_init"]
    assert [s["task"] for s in skipped] == ["zero_shot"] and "no text tower" in skipped[0]["reason"]
    details = list((tmp_path / "zs_details").glob("*zero_shot.csv"))
    assert len(details) == 1 and len(pd.read_csv(details[0])) == n * len(classes)
    assert "Zero-shot classification: accuracy and AUROC (%)" in summary_tables(df)


def test_zero_shot_without_candidates_for_a_class_is_skipped_with_the_reason(run_dir, tmp_path):
    classes = ["No Finding", "Pleural Other"]  # SynthCXR draws no "Pleural Other" finding
    config = EvalConfig().with_overrides(**{"zero_shot.classes": classes, "zero_shot.prompts": str(_prompt_file(tmp_path, classes))})
    df = evaluate_runs([run_dir], tasks="zero_shot", seeds=(0,), baselines=(), config=config, progress=False)
    assert df.empty and "['Pleural Other']" in df.attrs["skipped"][0]["reason"]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_cli_evaluate_writes_results_and_prints_tables(run_dir, tmp_path, capsys):
    from localign.cli import main

    out = tmp_path / "cli" / "eval.csv"
    code = main(["evaluate", "--runs", str(run_dir), "--tasks", "probe", "--fractions", "1", "--seeds", "0", "--baselines", "none",
                 "--out", str(out), "--threads", "1", "--set", "probe.max_iter=300", "--quiet"])
    assert code == 0
    df = pd.read_csv(out)
    assert set(df["task"]) == {"probe"} and set(df["fraction"]) == {1.0} and set(df["seed"]) == {0}
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["config"]["probe"]["max_iter"] == 300 and info["config"]["baselines"] == []
    printed = capsys.readouterr().out
    assert "Linear probe: macro AUROC" in printed and "ours: SynthCXR" in printed and "paper: CheXpert" in printed
    with pytest.raises(SystemExit, match="unknown task 'bogus'"):
        main(["evaluate", "--runs", str(run_dir), "--tasks", "bogus", "--out", str(out)])

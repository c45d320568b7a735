"""Zero-shot classification (localign.eval.protocols.zero_shot) and the protocol registry, on tiny inputs with known answers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.eval.protocols import registry as R
from localign.eval.protocols.common import ProtocolResult, TaskUnavailable
from localign.eval.protocols.zero_shot import (
    ZERO_SHOT_CLASSES,
    ZeroShotConfig,
    class_prompts,
    class_scores,
    draw_balanced,
    ensemble_mode,
    load_prompts,
    single_label_studies,
    zero_shot_metrics,
    zero_shot_table,
)
from localign.models.methods.base import PretrainModel
from localign.models.methods.global_contrastive import GlobalContrastive
from localign.models.methods.gloria import Gloria
from localign.models.methods.lovt import LoVT


def _cosine(image_emb, report_emb):
    return PretrainModel.similarity(None, image_emb, report_emb)


# --------------------------------------------------------------------------------------------------
# scores and metrics
# --------------------------------------------------------------------------------------------------
def test_planted_embeddings_matching_their_class_prompts_give_accuracy_one():
    k, d = 5, 8
    g = torch.Generator().manual_seed(0)
    directions = torch.eye(d)[:k]
    labels = np.repeat(np.arange(k), 4)
    images = ImageEmbeddings(global_embedding=directions[labels] * 3.0 + 0.05 * torch.randn(len(labels), d, generator=g))
    # three prompts per class, each its class direction plus a little noise, at different scales
    prompts = [ReportEmbeddings(global_embedding=directions[c] * torch.tensor([[1.0], [2.0], [0.5]]) + 0.05 * torch.randn(3, d, generator=g)) for c in range(k)]
    for mode in ("embedding", "score"):
        scores = class_scores(images, prompts, _cosine, mode)
        assert scores.shape == (len(labels), k)
        m = zero_shot_metrics(scores, labels, [f"c{i}" for i in range(k)])
        assert m["accuracy"] == 1.0 and m["macro"] == 1.0 and all(m[f"c{i}"] == 1.0 for i in range(k))


def test_embedding_mode_averages_normalised_prompts_score_mode_averages_scores():
    images = ImageEmbeddings(global_embedding=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # one class whose two prompts point along x and y: the mean direction is the diagonal
    prompts = [ReportEmbeddings(global_embedding=torch.tensor([[10.0, 0.0], [0.0, 1.0]]))]
    emb = class_scores(images, prompts, _cosine, "embedding")
    np.testing.assert_allclose(emb.numpy(), [[2 ** -0.5], [2 ** -0.5]], atol=1e-6)
    dot = lambda a, b: a.global_embedding @ b.global_embedding.T  # noqa: E731 (a method score that is not a cosine)
    np.testing.assert_allclose(class_scores(images, prompts, dot, "score").numpy(), [[5.0], [0.5]])
    with pytest.raises(ValueError, match="mode"):
        class_scores(images, prompts, _cosine, "max")


def test_metrics_by_hand():
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = zero_shot_metrics(scores, [0, 0, 1, 1], ["a", "b"])
    assert m["accuracy"] == 0.5
    # class a: positives score 0.9, 0.4; negatives 0.3, 0.8 -> 3 of 4 pairs ordered right
    assert m["a"] == pytest.approx(0.75) and m["b"] == pytest.approx(0.75) and m["macro"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="expected shape"):
        zero_shot_metrics(scores[:, :1], [0, 0, 1, 1], ["a", "b"])


def test_ensemble_mode_follows_the_methods_own_score():
    assert ensemble_mode(GlobalContrastive.__new__(GlobalContrastive)) == "embedding"
    assert ensemble_mode(LoVT.__new__(LoVT)) == "embedding"
    assert ensemble_mode(Gloria.__new__(Gloria)) == "score"


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------
def test_packaged_prompts_cover_the_five_classes_as_every_combination():
    prompts = load_prompts()
    assert set(ZERO_SHOT_CLASSES) <= set(prompts)
    assert len(prompts["Cardiomegaly"]) == 4 * 3 * 1  # severities x findings x locations
    assert "Cardiomegaly." in prompts["Cardiomegaly"] and "Mild cardiomegaly." in prompts["Cardiomegaly"]
    assert "Small pleural effusion on the left." in prompts["Pleural Effusion"]
    assert all(p.endswith(".") and p[0].isupper() for v in prompts.values() for p in v)


def test_unknown_class_names_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no prompts for class\(es\) \['Pneumonia'\] in zero_shot_prompts.yaml"):
        class_prompts(["Atelectasis", "Pneumonia"])
    with pytest.raises(ValueError, match=r"\['Atelectasys'\] are not CheXpert labels"):
        ZeroShotConfig(classes=("Atelectasys", "Edema"))
    bad = tmp_path / "prompts.yaml"
    bad.write_text("classes:\n  Edema: {finding: [edema], where: [here]}\n")
    with pytest.raises(ValueError, match="class 'Edema': expected the keys severity, finding, location"):
        load_prompts(bad)
    own = tmp_path / "own.yaml"
    own.write_text("classes:\n  Edema: {finding: [edema]}\n  Pneumonia: {severity: ['', mild], finding: [pneumonia]}\n")
    assert class_prompts(["Pneumonia", "Edema"], own) == {"Pneumonia": ["Pneumonia.", "Mild pneumonia."], "Edema": ["Edema."]}


# --------------------------------------------------------------------------------------------------
# the balanced single-label test set
# --------------------------------------------------------------------------------------------------
def _fake_prepared(tmp_path: Path) -> SimpleNamespace:
    """20 test studies: 6 only-A, 4 only-B, 3 only-C, 3 with A and B (excluded), 2 uncertain C only
    (excluded), 2 without finding; and 5 only-A studies in train. Two frontal images per study."""
    rows = []
    def add(n, split, a, b, c):
        for _ in range(n):
            rows.append({"study_id": 100 + len(rows), "split": split, "Atelectasis": a, "Cardiomegaly": b, "Edema": c})
    add(6, "test", 1.0, 0.0, np.nan)
    add(4, "test", 0.0, 1.0, 0.0)
    add(3, "test", np.nan, np.nan, 1.0)
    add(3, "test", 1.0, 1.0, 0.0)
    add(2, "test", 0.0, 0.0, -1.0)
    add(2, "test", 0.0, 0.0, 0.0)
    add(5, "train", 1.0, 0.0, 0.0)
    labels = pd.DataFrame(rows)
    images = pd.DataFrame([{"dicom_id": f"{r['study_id']}-{v}", "study_id": r["study_id"], "split": r["split"],
                            "path": f"img/{r['study_id']}-{v}.png"} for r in rows for v in (0, 1)])
    return SimpleNamespace(root=tmp_path, labels=labels, images=images, image_path=lambda p: tmp_path / p)


def test_single_label_studies_keep_exactly_one_positive_and_the_first_image(tmp_path):
    prepared = _fake_prepared(tmp_path)
    table = single_label_studies(prepared, ["Atelectasis", "Cardiomegaly", "Edema"])
    assert table["label"].value_counts().to_dict() == {"Atelectasis": 6, "Cardiomegaly": 4, "Edema": 3}
    assert all(d.endswith("-0") for d in table["dicom_id"]) and table["path"].iloc[0] == str(tmp_path / "img/100-0.png")
    assert table["study_id"].is_monotonic_increasing


def test_balanced_draw_is_as_large_as_the_smallest_class_allows_and_seeded(tmp_path):
    classes = ["Atelectasis", "Cardiomegaly", "Edema"]
    candidates = single_label_studies(_fake_prepared(tmp_path), classes)
    draw = draw_balanced(candidates, classes, 200, seed=0)
    assert draw["label"].value_counts().to_dict() == {c: 3 for c in classes}  # Edema has 3
    assert list(draw["label"]) == [c for c in classes for _ in range(3)]
    assert draw.equals(draw_balanced(candidates, classes, 200, seed=0))
    assert not draw.equals(draw_balanced(candidates, classes, 200, seed=1))  # 6 choose 3 and 4 choose 3 differ by seed
    capped = draw_balanced(candidates, classes, 2, seed=0)
    assert capped["label"].value_counts().to_dict() == {c: 2 for c in classes}
    assert set(draw[draw["label"] == "Edema"]["study_id"]) == set(candidates[candidates["label"] == "Edema"]["study_id"])
    with pytest.raises(TaskUnavailable, match=r"\['Pneumonia'\]"):
        draw_balanced(candidates.assign(), [*classes, "Pneumonia"], 200, seed=0)


# --------------------------------------------------------------------------------------------------
# the registry: zero_shot is a protocol like the others; a new one needs only a registration
# --------------------------------------------------------------------------------------------------
def test_zero_shot_is_registered_with_its_config_table_and_figure():
    from localign.eval.protocols.runner import TASK_ALIASES, TASKS, TEXT_TASKS, EvalConfig, resolve_tasks

    assert TASKS[-1] == "zero_shot" and "zero_shot" in TASK_ALIASES["all"] and "zero_shot" in TEXT_TASKS
    assert resolve_tasks("zero_shot,probe") == ("probe", "zero_shot")
    cfg = EvalConfig().with_overrides(**{"zero_shot.n_per_class": 7, "zero_shot.classes": ["Edema", "Atelectasis"]})
    assert cfg.zero_shot == ZeroShotConfig(classes=("Edema", "Atelectasis"), n_per_class=7)
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="zero_shot.n_per_class"):
        EvalConfig().with_overrides(**{"zero_shot.n_per_class": 0})
    p = R.get_protocol("zero_shot")
    assert p.needs_text and p.config_class is ZeroShotConfig and p.figures[0].label == "fig-eval-zero-shot"


def _zero_shot_rows() -> pd.DataFrame:
    rows = []
    for seed, (acc, macro) in enumerate([(0.40, 0.70), (0.44, 0.74)]):
        for metric, v in {"accuracy": acc, "macro": macro, "Edema": macro, "chance_accuracy": 0.2, "n_per_class": 12.0}.items():
            rows.append({"run": "clip", "method": "clip", "task": "zero_shot", "fraction": 1.0, "seed": seed, "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_zero_shot_table_and_figure_read_the_seed_means():
    from localign.eval.tables import summary_tables
    from localign.viz.evaluation import protocol_figures

    table = zero_shot_table(_zero_shot_rows())
    row = table.iloc[0]
    assert row["source"] == "ours: SynthCXR" and row["accuracy"].startswith("42.0 ± ") and row["macro"].startswith("72.0 ± ")
    assert row["n_per_class"] == "12" and "Edema" in table.columns
    assert list(summary_tables(_zero_shot_rows())) == ["Zero-shot classification: accuracy and AUROC (%)"]
    [(spec, fig)] = protocol_figures(_zero_shot_rows())
    assert spec.name == "zero_shot"
    np.testing.assert_allclose(sorted(p.get_height() for p in fig.axes[0].patches), [42.0, 72.0])


def test_a_new_protocol_is_one_registration(monkeypatch):
    """A protocol registered at run time is run by the runner, and its table and figure are shown."""
    from localign.eval.protocols.runner import EvalConfig, Subject, _evaluate_subject
    from localign.eval.tables import summary_tables
    from localign.viz.evaluation import plot_metric_bars, protocol_figures

    def run(ctx):
        return [ProtocolResult(1.0, s, {"score": 0.5 + s / 10}) for s in ctx.config.seeds]

    def table(results, data_label="SynthCXR", with_paper=True):
        return {"Toy": results[results["task"] == "toy"].groupby("method")["value"].mean().reset_index()}

    spec = R.FigureSpec("toy", "fig-eval-toy", "A toy.", lambda r: plot_metric_bars(r, ["toy"], "score"))
    R.register_protocol(R.Protocol("toy", run, "a toy protocol", table=table, figures=(spec,)))
    try:
        cfg = EvalConfig(tasks=("toy",), seeds=(0, 1), baselines=())
        subject = Subject("r", "m", encoder=None, prep=None, prepared=None, model=None)
        book = {"skipped": [], "timings": [], "details": []}
        rows = pd.DataFrame(_evaluate_subject(subject, cfg, stores=None, progress=False, log_book=book))
        assert list(rows["value"]) == [0.5, 0.6] and set(rows["task"]) == {"toy"}
        assert summary_tables(rows)["Toy"]["value"].tolist() == [pytest.approx(0.55)]
        assert [s.name for s, _ in protocol_figures(rows)] == ["toy"]
    finally:
        R.unregister_protocol("toy")
    with pytest.raises(ValueError, match="unknown task 'toy'"):
        EvalConfig(tasks=("toy",))


def test_registry_rejects_clashing_names():
    with pytest.raises(ValueError, match="already registered"):
        R.register_protocol(R.Protocol("probe", lambda ctx: [], "again"))
    with pytest.raises(ValueError, match="already an alias"):
        R.register_protocol(R.Protocol("seg", lambda ctx: [], "an alias"))
    with pytest.raises(ValueError, match="config field 'probe'"):
        R.register_protocol(R.Protocol("probe2", lambda ctx: [], "x", config_field="probe", config_class=ZeroShotConfig))
    assert "probe2" not in R.task_names()

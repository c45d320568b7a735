"""Dataset-card figures and tables (notebook 01): examples, labels, text statistics, filtering counts.

Every function takes a :class:`~localign.data.manifest.PreparedDataset` (real or SynthCXR) and
returns a matplotlib Figure or a pandas DataFrame; nothing is drawn globally.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from localign.data import layout
from localign.data.images import load_image
from localign.data.manifest import PreparedDataset

_COLORS = plt.get_cmap("tab10").colors


def _close(fig: Figure) -> Figure:
    plt.close(fig)  # returned, not shown: the notebook displays it once
    return fig


def pick_examples(prepared: PreparedDataset, n: int = 4, seed: int = 0, split: str = "train") -> pd.DataFrame:
    """``n`` studies of ``split`` with at least one visual finding (SynthCXR) or any studies (real data)."""
    rows = prepared.split(split)
    if prepared.sentences is not None:
        visual = prepared.sentences[(prepared.sentences["kind"] == "finding") & prepared.sentences["mask"].notna()]
        rows = rows[rows["study_id"].isin(visual["study_id"])]
    if rows.empty:
        raise ValueError(f"{prepared.root}: no {split} studies to show")
    return rows.sample(n=min(n, len(rows)), random_state=seed).reset_index(drop=True)


def plot_examples(prepared: PreparedDataset, n: int = 4, seed: int = 0, split: str = "train", wrap: int = 58) -> Figure:
    """Image–report pairs: the first frontal image with the masks of the finding sentences outlined
    (SynthCXR), beside the report sentences; a sentence and its mask share a colour."""
    examples = pick_examples(prepared, n, seed, split)
    fig, axes = plt.subplots(len(examples), 2, figsize=(12, 3.6 * len(examples)), gridspec_kw={"width_ratios": [1, 1.6]})
    axes = np.atleast_2d(axes)
    for row, ax_img, ax_txt in zip(examples.itertuples(), axes[:, 0], axes[:, 1]):
        dicom = row.dicom_ids[0]
        image = load_image(prepared.image_path(row.image_paths[0]))
        ax_img.imshow(image, cmap="gray")
        ax_img.set_title(f"study {row.study_id} · {row.view_positions[0]} · {row.split}", fontsize=9)
        ax_img.axis("off")
        color_of: dict[str, tuple] = {}  # sentence -> colour; sentences about the same finding share its mask's colour
        if prepared.sentences is not None:
            sents = prepared.sentences[(prepared.sentences["study_id"] == row.study_id) & (prepared.sentences["dicom_id"] == dicom)]
            mask_color: dict[str, tuple] = {}
            for s in sents.itertuples():
                if s.kind == "finding" and isinstance(s.mask, str):
                    if s.mask not in mask_color:
                        mask_color[s.mask] = _COLORS[len(mask_color) % len(_COLORS)]
                        mask = load_image(prepared.synthcxr_path(s.mask)) > 127
                        if mask.any():
                            ax_img.contour(mask, levels=[0.5], colors=[mask_color[s.mask]], linewidths=1.5)
                    color_of.setdefault(s.sentence, mask_color[s.mask])
        y = 1.0
        for sentence in row.sentences:
            lines = textwrap.wrap(sentence, wrap) or [""]
            ax_txt.text(0, y, "\n".join(lines), va="top", fontsize=8.5, color=color_of.get(sentence, "black"),
                        fontweight="bold" if sentence in color_of else "normal", transform=ax_txt.transAxes)
            y -= 0.065 * len(lines) + 0.015
        ax_txt.axis("off")
    fig.tight_layout()
    return _close(fig)


def label_prevalence(prepared: PreparedDataset) -> pd.DataFrame:
    """Per CheXpert label: positives, negatives and unusable (blank / uncertain under ``ignore``) per split."""
    labels = prepared.labels
    rows = []
    for label in layout.CHEXPERT_LABELS:
        for split, df in labels.groupby("split"):
            v = df[label]
            rows.append({"label": label, "split": split, "positive": int((v == 1).sum()), "negative": int((v == 0).sum()),
                         "blank": int(v.isna().sum()), "prevalence": float((v == 1).mean())})
    return pd.DataFrame(rows)


def plot_label_prevalence(prepared: PreparedDataset) -> Figure:
    """Share of studies with each CheXpert label positive, per split."""
    table = label_prevalence(prepared).pivot(index="label", columns="split", values="prevalence")
    table = table.reindex([l for l in layout.CHEXPERT_LABELS if l in table.index])
    fig, ax = plt.subplots(figsize=(9, 4))
    table.plot.barh(ax=ax, width=0.8)
    ax.invert_yaxis()
    ax.set(xlabel="share of studies labelled positive", ylabel="", title="CheXpert label prevalence")
    fig.tight_layout()
    return _close(fig)


def cooccurrence(prepared: PreparedDataset, labels: tuple[str, ...] = layout.PATHOLOGY9) -> pd.DataFrame:
    """P(column positive | row positive) over studies, with positives = label 1."""
    pos = (prepared.labels[list(labels)] == 1).astype(float)
    counts = pos.T @ pos
    return counts.div(np.diag(counts).clip(min=1), axis=0)


def plot_cooccurrence(prepared: PreparedDataset, labels: tuple[str, ...] = layout.PATHOLOGY9) -> Figure:
    """Heat map of P(column | row): co-occurrence shortcuts (edema with cardiomegaly, ...) show as bright cells."""
    import seaborn as sns

    table = cooccurrence(prepared, labels)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=ax, cbar_kws={"label": "P(column | row)"})
    ax.set_title("label co-occurrence (studies)")
    fig.tight_layout()
    return _close(fig)


def text_statistics(prepared: PreparedDataset, tokenizer=None) -> pd.DataFrame:
    """Per study: sections present, sentences, words and (optionally) word-piece tokens of the selected text."""
    m = prepared.manifest
    out = pd.DataFrame({
        "study_id": m["study_id"], "split": m["split"],
        "sections": m["text_sections"].map(lambda s: "+".join(s)),
        "sentences": m["n_sentences"], "words": m["n_tokens"],
    })
    if tokenizer is not None:
        out["wordpieces"] = [len(ids) + 2 for ids in tokenizer(list(m["text"]), add_special_tokens=False)["input_ids"]]
    return out


def plot_text_statistics(stats: pd.DataFrame) -> Figure:
    """Histograms of sections present, sentences per report and tokens per report."""
    n_panels = 4 if "wordpieces" in stats else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(4 * n_panels, 3.3))
    stats["sections"].value_counts().plot.bar(ax=axes[0], rot=0)
    axes[0].set(title="selected sections", ylabel="studies")
    axes[1].hist(stats["sentences"], bins=range(0, int(stats["sentences"].max()) + 2), color="C1")
    axes[1].set(title="sentences per report", xlabel="sentences")
    axes[2].hist(stats["words"], bins=30, color="C2")
    axes[2].set(title="words per report", xlabel="words")
    if n_panels == 4:
        axes[3].hist(stats["wordpieces"], bins=30, color="C3")
        for limit, style in ((97, ":"), (512, "--")):
            if stats["wordpieces"].max() > 0.5 * limit:
                axes[3].axvline(limit, color="k", ls=style, lw=1, label=f"{limit} (GLoRIA/LIMITR)" if limit == 97 else f"{limit} (LoVT)")
        if axes[3].get_legend_handles_labels()[0]:
            axes[3].legend(fontsize=8)
        axes[3].set(title="word pieces per report", xlabel="tokens incl. [CLS]/[SEP]")
    fig.tight_layout()
    return _close(fig)


def filtering_counts(prepared: PreparedDataset) -> pd.DataFrame:
    """The per-step counts printed by ``localign prepare`` (compare them with published counts)."""
    counts = prepared.counts.copy()
    counts["removed"] = counts["removed"].fillna(0).astype(int)
    return counts[["table", "step", "kept", "removed", "reason"]]


def split_sizes(prepared: PreparedDataset) -> pd.DataFrame:
    """Patients, studies and frontal images per official split."""
    m, im = prepared.manifest, prepared.images
    rows = []
    for split in layout.MIMIC_SPLITS:
        rows.append({"split": split, "patients": m.loc[m["split"] == split, "subject_id"].nunique(),
                     "studies": int((m["split"] == split).sum()), "frontal images": int((im["split"] == split).sum())})
    return pd.DataFrame(rows).set_index("split")


def plot_calibration(result: pd.DataFrame, low: float = 0.75, high: float = 0.95) -> Figure:
    """Per-finding test AUROC of the supervised image-only classifier, with the target band of the spec."""
    r = result.dropna(subset=["auroc"]).sort_values("auroc")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(r) + 1.2))
    ax.axvspan(low, high, color="C2", alpha=0.15, label=f"target band {low}–{high}")
    ax.axvline(0.5, color="grey", ls=":", lw=1, label="chance")
    ax.barh(r["label"], r["auroc"], color="C0")
    for y, (auc, n) in enumerate(zip(r["auroc"], r["n_pos"])):
        ax.text(auc + 0.005, y, f"{auc:.2f} ({n} pos.)", va="center", fontsize=8)
    ax.set(xlim=(0.0, 1.12), xlabel="test AUROC", title="calibration: supervised image-only ResNet-18")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _close(fig)


def synthcxr_facts(prepared: PreparedDataset) -> pd.DataFrame:
    """Generator facts of a SynthCXR dataset: sizes, generation time and speed, size on disk."""
    from localign.data.synthcxr import read_generator_json

    root = prepared.synthcxr_root.parent
    info = read_generator_json(root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "prepared" not in p.parts)
    timing = info.get("timing", {})
    counts = info.get("counts", {})
    rows = [("generator version", info.get("version")), ("seed", info.get("seed")), ("config hash", info.get("config_hash"))]
    rows += [(f"{k}", v) for k, v in counts.items() if not isinstance(v, (dict, list))]
    rows += [(f"time: {k}", v) for k, v in timing.items() if not isinstance(v, (dict, list))]
    rows.append(("size on disk (MB)", round(size / 1e6, 1)))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")

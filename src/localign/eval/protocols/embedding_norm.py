"""Example protocol (scratch): mean L2 norm of the frozen global features of one split."""

from __future__ import annotations

from dataclasses import dataclass

from localign.eval.protocols.common import ProtocolResult
from localign.eval.protocols.features import extract_features
from localign.eval.protocols.registry import FigureSpec, Protocol, register_protocol


@dataclass(frozen=True)
class EmbeddingNormConfig:
    split: str = "test"


def run(ctx) -> list[ProtocolResult]:
    cfg, prepared = ctx.config.embedding_norm, ctx.prepared
    images = prepared.images[prepared.images["split"] == cfg.split]
    store = ctx.stores.get([str(prepared.image_path(p)) for p in images["path"]], ctx.prep.input_size)
    feats = extract_features(ctx.encoder, store, ctx.prep, batch_size=ctx.config.batch_size, device=ctx.device, progress=ctx.progress)
    return [ProtocolResult(1.0, 0, {"norm": float(feats.norm(dim=1).mean()), "n_images": float(len(feats))})]


def tables(results, data_label="SynthCXR", with_paper=True):
    from localign.eval import tables as T

    s = T.summarize_task(results, "embedding_norm")
    return {"Embedding norm": T.pivot_cells(s[s["metric"] == "norm"], "metric", 1.0, 2, data_label)}


def figure(results):
    from localign.viz.evaluation import plot_metric_bars

    return plot_metric_bars(results, ["embedding_norm"], "norm", scale=1.0)


register_protocol(Protocol("embedding_norm", run, "mean norm of the frozen global features", config_field="embedding_norm",
                           config_class=EmbeddingNormConfig, table=tables,
                           figures=(FigureSpec("embedding_norm", "fig-eval-embedding-norm", "Mean norm.", figure),)))

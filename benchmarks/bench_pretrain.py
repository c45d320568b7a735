"""Benchmark a full pretraining step per method, at demo and paper sizes (CPU or GPU).

For each (method, size) it measures, in a fresh subprocess (so that peak memory is that config's):

- ``step_s``: one optimizer step = forward + objective + backward + AdamW step, median of repeats;
- ``encoders_s``: forward + backward of the image and text encoders alone on the same batch (a
  trivial sum of their outputs as the loss): the unavoidable part of any method;
- ``overhead``: ``step_s / encoders_s - 1``, the share of heads, objectives and bookkeeping;
- ``samples_per_s``: batch size / step_s;
- ``peak_rss_gb`` (CPU) or ``peak_cuda_gb``.

Data loading is measured separately (``--data``): samples/s of the training Dataset + collate on a
prepared SynthCXR folder with 0 workers, the cost that a single-process run adds to every step.

Sizes: ``demo`` = ResNet-18 at 128 px + MiniLM (6 layers, 384), batch 32; ``paper`` = each paper's
encoders with random weights of the same shapes (ResNet-50 at 224 px, 299 px inside GLoRIA/LIMITR;
a 12-layer 768-wide BERT like Bio_ClinicalBERT; Liao et al.'s ResNets at 256 px) and batch sizes
(LoVT/ConVIRT/CLIP 32, GLoRIA/LIMITR 48, local MI 8 in the repository — we use 32 for comparability).

With ``--recipe demo`` the text tower is locked (``text.freeze``) and reads its token states from
a :mod:`~localign.models.text_cache` built over the batch's sequences, as a demo run does; the row
then also has ``image_s`` (forward + backward of the image encoder alone) and ``ratio_to_image``
(``step_s / image_s``: what the heads, the objective and the cached text add to the image encoder).

    python benchmarks/bench_pretrain.py --sizes demo --out benchmarks/results/pretrain_cpu.csv
    python benchmarks/bench_pretrain.py --sizes paper --methods lovt limitr --repeats 2
    python benchmarks/bench_pretrain.py --recipe demo --sizes demo paper --out benchmarks/results/pretrain_cpu_recipe_demo.csv
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ["convirt", "clip", "gloria", "global_mi_cpc", "local_mi_cpc", "lovt", "limitr"]
BERT_BASE = (("hidden_size", 768), ("num_hidden_layers", 12), ("num_attention_heads", 12), ("intermediate_size", 3072))


def method_config(name: str, size: str):
    from localign.config import replace
    from localign.models import get_method
    from localign.train.config import encoder_overrides

    base = get_method(name)
    if size == "demo":
        o = encoder_overrides(base, image_arch="resnet18", image_size=128, text_model="minilm")
        return replace(base, **o), 32
    # paper shapes, random weights (no download): keep the preset's image encoder, BERT-base text tower
    o = {"image.weights": None, "text.model": "minilm", "text.random_init": True, "text.tiny": BERT_BASE}
    batch = {"gloria": 48, "limitr": 48}.get(name, 32)
    if base.family == "limitr":
        # all 48 x 48 pairs at once need ~2.5 GB per [B, B, 361, 768] tensor and were killed at 24 GB;
        # score them 4 images at a time with checkpointing (same loss, recomputed in backward)
        o["loss.pair_chunk"] = 4
    return replace(base, **o), batch


def synthetic_reports(cfg, batch: int, seed: int = 0):
    """Token ids with realistic report shapes: ~8 sentences of 6-16 tokens (vocabulary ids 2000-29000)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    reports = []
    for _ in range(batch):
        n = int(rng.integers(5, 11))
        reports.append([list(rng.integers(2000, 29000, size=int(rng.integers(6, 17)))) for _ in range(n)])
    if cfg.text_input.sentence_sampling == "random_sentence":
        reports = [[r[0]] for r in reports]
    return reports


def run_one(name: str, size: str, repeats: int, device: str, recipe: str = "paper") -> dict:
    import tempfile

    import torch

    from localign.config import replace
    from localign.data.text import SpecialTokens, collate_reports, tower_sequences
    from localign.models import build_model
    from localign.models.text_cache import build_token_state_cache

    torch.manual_seed(0)
    cfg, batch = method_config(name, size)
    if recipe == "demo":
        cfg = replace(cfg, **{"text.freeze": True, "text_input.sentence_shuffling": None})
    model = build_model(cfg).to(device).train()
    special = SpecialTokens(cls=101, sep=102, pad=0)
    reports = synthetic_reports(cfg, batch)
    text = collate_reports(reports, cfg.text_input, special).to(device)
    if recipe == "demo":
        model.text_encoder.state_cache = build_token_state_cache(model.text_encoder, tower_sequences(reports, cfg.text_input, special),
                                                                 tempfile.mkdtemp(prefix="bench-text-states-"))
    s = cfg.image.input_size
    images = torch.randn(batch, 1, s, s, device=device)
    ids = torch.arange(batch, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def full_step():
        out = model(images, text, ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    def encoders_only():
        feats = model.image_encoder(images)
        if text.mode == "sentences":
            b, m, t = text.input_ids.shape
            valid = text.sentence_mask.reshape(-1)
            states = model.text_encoder(text.input_ids.reshape(b * m, t)[valid], text.attention_mask.reshape(b * m, t)[valid])
        else:
            states = model.text_encoder(text.input_ids, text.attention_mask)
        loss = feats.regions.float().mean() + feats.pooled.float().mean() + states.tokens.float().mean()
        model.zero_grad(set_to_none=True)
        loss.backward()

    def timed(fn) -> float:
        fn()  # warm-up
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def image_only():
        feats = model.image_encoder(images)
        loss = feats.regions.float().mean() + feats.pooled.float().mean()
        model.zero_grad(set_to_none=True)
        loss.backward()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    image = timed(image_only)
    enc = timed(encoders_only)
    step = timed(full_step)
    row = {"method": name, "size": size, "batch": batch, "image": f"{cfg.image.arch}@{s}" + (f"->{cfg.image.upsample_to}" if cfg.image.upsample_to else ""),
           "text": f"{dict(cfg.text.tiny or ()).get('num_hidden_layers', 6)}x{dict(cfg.text.tiny or ()).get('hidden_size', 384)}",
           "step_s": round(step, 3), "encoders_s": round(enc, 3), "overhead": round(step / enc - 1, 3),
           "image_s": round(image, 3), "ratio_to_image": round(step / image, 3), "recipe": recipe,
           "samples_per_s": round(batch / step, 2), "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def bench_data(prepared: str, n: int) -> dict:
    import torch

    from localign.data.manifest import load_prepared
    from localign.data.text import SpecialTokens
    from localign.data.tokenize import load_tokenizer
    from localign.models import get_method
    from localign.data.transforms import AugmentConfig
    from localign.data.pretrain import Collate, PretrainDataset, pixel_stats, report_tokens

    prep = load_prepared(prepared)
    cfg = get_method("lovt")
    tok = load_tokenizer("minilm")
    tokens = report_tokens(prep, tok, 512)
    ds = PretrainDataset(prep, "train", tokens, cfg.text_input, 128, AugmentConfig(), pixel_stats(prep))
    collate = Collate(cfg.text_input, SpecialTokens.from_tokenizer(tok))
    n = min(n, len(ds))
    t0 = time.perf_counter()
    samples = [ds[i] for i in range(n)]
    collate(samples[:32])
    dt = time.perf_counter() - t0
    return {"method": "data (lovt text, convirt augmentation)", "size": "demo", "batch": n, "samples_per_s": round(n / dt, 1),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=METHODS)
    p.add_argument("--sizes", nargs="*", default=["demo", "paper"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, help="a prepared dataset to time the data pipeline on")
    p.add_argument("--recipe", default="paper", choices=("paper", "demo"), help="demo: locked text tower reading cached states")
    p.add_argument("--out", default=None, help="CSV to write")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # child process: one configuration, JSON on the last line
        print(json.dumps(run_one(args.one[0], args.one[1], args.repeats, args.device, args.recipe)))
        return
    import pandas as pd

    rows = []
    if args.data:
        rows.append(bench_data(args.data, 256))
        print(rows[-1], flush=True)
    for size in args.sizes:
        for name in args.methods:
            cmd = [sys.executable, __file__, "--one", name, size, "--repeats", str(args.repeats), "--device", args.device, "--recipe", args.recipe]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode != 0:
                print(f"{name}/{size} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False) if hasattr(df, "to_markdown") else df.to_string(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()

"""``localign synthcxr``: generate a SynthCXR dataset, or (re)use the cached default demo dataset.

    localign synthcxr --out DIR [--n-studies N] [--image-size S] [--seed K] [--workers W] [--n-rsna N]
    localign synthcxr --demo
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from localign.data.synthcxr.config import SynthCXRConfig
from localign.data.synthcxr.writer import ensure_demo_dataset, generate, read_generator_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthCXRConfig()
    parser.add_argument("--out", type=Path, help="output folder (empty, missing, or an earlier SynthCXR output)")
    parser.add_argument("--demo", action="store_true", help="generate the default demo dataset into the cache (or reuse it) and print its path")
    parser.add_argument("--n-studies", type=int, default=defaults.n_studies, help=f"number of studies (default {defaults.n_studies})")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help=f"image height in pixels (default {defaults.image_size})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--n-rsna", type=int, default=defaults.n_rsna, help=f"number of RSNA-style detection images (default {defaults.n_rsna})")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the CPU count, at most 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _disk_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.demo:
        overrides = {k: v for k, v in (("n_studies", args.n_studies), ("image_size", args.image_size), ("seed", args.seed), ("n_rsna", args.n_rsna)) if v != getattr(SynthCXRConfig(), k)}
        if overrides:
            raise SystemExit(f"localign synthcxr: --demo uses the default config; drop {sorted(overrides)} or use --out")
        root = ensure_demo_dataset(workers=args.workers, progress=not args.quiet)
    else:
        if args.out is None:
            raise SystemExit("localign synthcxr: give --out DIR (or --demo)")
        config = dataclasses.replace(SynthCXRConfig(), n_studies=args.n_studies, image_size=args.image_size, seed=args.seed, n_rsna=args.n_rsna)
        root = generate(args.out, config, workers=args.workers, progress=not args.quiet)
    info = read_generator_json(root) or {}
    counts, timing = info.get("counts", {}), info.get("timing", {})
    size_mb = _disk_size(root) / 1e6
    print(f"SynthCXR dataset: {root}")
    print(f"  {counts.get('studies', '?')} studies, {counts.get('patients', '?')} patients, {counts.get('images', '?')} images, {counts.get('rsna_images', 0)} RSNA images")
    speed = f"{timing.get('seconds', float('nan')):.1f} s, {timing.get('studies_per_second', float('nan')):.1f} studies/s with {timing.get('workers', '?')} worker(s)"
    reused = args.demo and time.perf_counter() - start < 1.0
    print(f"  {'reused from the cache (generated in ' + speed + ')' if reused else 'generated in ' + speed}")
    print(f"  on disk: {size_mb:.1f} MB")
    return 0

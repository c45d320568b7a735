"""Cached token states of a frozen text tower (a locked tower, as LiT: Zhai et al., CVPR 2022).

When every layer of the text tower is frozen (``text.freeze``) and it runs in eval mode, the token
states of a sequence depend only on its token ids and the tower's weights. They are then computed
once per dataset, stored in the cache folder and memory-mapped, and a training step costs the image
encoder and the heads only. The projection and attention heads above the tower still train.

The cache is **content-addressed**: it maps a token-id sequence (``[CLS] ... [SEP]``, no padding)
to its states, so it serves every text view that produces a cached sequence -- the whole report
(retrieval, LoVT without sentence shuffling), one sentence (ConVIRT/CLIP/GLoRIA's random sentence,
local MI's per-sentence ``[CLS]``) -- whatever the batch and its padding. A sequence that is not in
the cache (a shuffled report, say) is computed by the tower on the fly, so the cache never changes
a result, only the time.

Its folder name is a hash of the tower's weights, its ``last_layers`` and the set of sequences, so a
change of model, tokenizer (other ids) or data builds a new cache instead of reading a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from localign.models.text import TextEncoder, TokenStates

log = logging.getLogger(__name__)

FORMAT = 1
_FILES = ("ids.npy", "offsets.npy", "tokens.npy", "cls.npy")


def model_fingerprint(encoder: TextEncoder) -> str:
    """sha256 over the tower's weights and the settings that shape its output."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "last_layers": encoder.config.last_layers}).encode())
    for name, tensor in sorted(encoder.bert.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def sequences_fingerprint(sequences: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for seq in sequences:
        arr = np.asarray(seq, dtype=np.int32)
        h.update(np.int32(len(arr)).tobytes())
        h.update(arr.tobytes())
    return h.hexdigest()


def unique_sequences(sequences: Iterable[Sequence[int]]) -> list[tuple[int, ...]]:
    """Distinct sequences in first-seen order."""
    seen: dict[tuple[int, ...], None] = {}
    for seq in sequences:
        seen.setdefault(tuple(int(t) for t in seq), None)
    return list(seen)


class TokenStateCache:
    """Token states ``[T_i, D]``, last-layer ``[CLS]`` ``[D]`` (and the pooler output) per sequence.

    :ivar hits, misses: sequences served from the cache / computed on the fly since creation
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, tokens: np.ndarray, cls: np.ndarray, pooled: np.ndarray | None) -> None:
        self.offsets = offsets
        self.tokens = tokens
        self.cls = cls
        self.pooled = pooled
        self.index = {ids[offsets[i] : offsets[i + 1]].tobytes(): i for i in range(len(offsets) - 1)}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.index)

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    def lookup(self, input_ids: Tensor, attention_mask: Tensor, run: Callable[[Tensor, Tensor], TokenStates]) -> TokenStates:
        """The states of a padded batch ``[B, T]``; rows not in the cache go through ``run``.

        Padded positions of ``tokens`` are 0 (no method reads them).
        """
        b, t = input_ids.shape
        device = input_ids.device
        lengths = attention_mask.sum(dim=1).tolist()
        ids_np = input_ids.detach().cpu().numpy().astype(np.int32)
        tokens = torch.zeros((b, t, self.dim), dtype=torch.float32)
        cls = torch.zeros((b, self.dim), dtype=torch.float32)
        pooled = torch.zeros((b, self.dim), dtype=torch.float32) if self.pooled is not None else None
        missing = []
        for row, n in enumerate(lengths):
            i = self.index.get(ids_np[row, :n].tobytes())
            if i is None:
                missing.append(row)
                continue
            lo, hi = self.offsets[i], self.offsets[i + 1]
            tokens[row, :n] = torch.from_numpy(np.array(self.tokens[lo:hi]))
            cls[row] = torch.from_numpy(np.array(self.cls[i]))
            if pooled is not None:
                pooled[row] = torch.from_numpy(np.array(self.pooled[i]))
        self.hits += b - len(missing)
        self.misses += len(missing)
        tokens, cls = tokens.to(device), cls.to(device)
        pooled = pooled.to(device) if pooled is not None else None
        if missing:
            rows = torch.tensor(missing, device=device)
            with torch.autocast(device_type=device.type, enabled=False):  # as the cached states were computed
                fresh = run(input_ids[rows], attention_mask[rows])
            tokens[rows] = fresh.tokens.float() * attention_mask[rows, :, None].to(tokens.dtype)
            cls[rows] = fresh.cls.float()
            if pooled is not None and fresh.pooled is not None:
                pooled[rows] = fresh.pooled.float()
        return TokenStates(tokens=tokens, cls=cls, pooled=pooled)


@torch.no_grad()
def compute_states(encoder: TextEncoder, sequences: Sequence[Sequence[int]], max_tokens: int = 8192,
                   progress: bool = False, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Run the (frozen, eval-mode) tower over ``sequences``; batches of equal length, so no padding.

    :param folder: write the arrays as ``.npy`` memory maps there (a real corpus does not fit in
        memory: 50 M tokens x 384 floats are 77 GB) instead of holding them in memory
    :return: ``(ids [N_tok] int32, offsets [N + 1], tokens [N_tok, D] f32, cls [N, D], pooled [N, D] or None)``
    """
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    d = encoder.hidden_size
    def array(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if folder is None:
            return np.zeros(shape, dtype=dtype)
        return np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)

    ids = array("ids.npy", (int(offsets[-1]),), np.int32)
    tokens = array("tokens.npy", (int(offsets[-1]), d), np.float32)
    cls = array("cls.npy", (len(sequences), d), np.float32)
    pooled = None
    order = np.argsort(lengths, kind="stable")
    groups: list[list[int]] = []
    for i in order:  # consecutive runs of equal length, at most max_tokens tokens per forward
        if groups and lengths[groups[-1][0]] == lengths[i] and (len(groups[-1]) + 1) * lengths[i] <= max_tokens:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    bar = None
    if progress:
        from localign.progress import tqdm

        bar = tqdm(total=len(sequences), desc="text tower states", unit="seq", leave=False)
    for group in groups:
        batch = torch.tensor([list(sequences[i]) for i in group], dtype=torch.long, device=device)
        states = encoder.run_tower(batch, torch.ones_like(batch))
        if states.pooled is not None and pooled is None:
            pooled = array("pooled.npy", (len(sequences), d), np.float32)
        for k, i in enumerate(group):
            lo, hi = offsets[i], offsets[i + 1]
            ids[lo:hi] = batch[k].cpu().numpy()
            tokens[lo:hi] = states.tokens[k].float().cpu().numpy()
            cls[i] = states.cls[k].float().cpu().numpy()
            if pooled is not None:
                pooled[i] = states.pooled[k].float().cpu().numpy()
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()
    encoder.train(was_training)
    return ids, offsets, tokens, cls, pooled


def cache_folder(root: Path, encoder: TextEncoder, sequences: Sequence[Sequence[int]]) -> Path:
    key = hashlib.sha256(f"{model_fingerprint(encoder)}:{sequences_fingerprint(sequences)}".encode()).hexdigest()[:20]
    return Path(root) / key


def load_cache(folder: Path) -> TokenStateCache:
    """A cache written by :func:`build_token_state_cache` (memory-mapped)."""
    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a complete token-state cache (missing {missing})")
    arrays = {f: np.load(folder / f, mmap_mode="r") for f in _FILES}
    pooled = np.load(folder / "pooled.npy", mmap_mode="r") if (folder / "pooled.npy").is_file() else None
    return TokenStateCache(np.asarray(arrays["ids.npy"]), np.asarray(arrays["offsets.npy"]), arrays["tokens.npy"], arrays["cls.npy"], pooled)


def build_token_state_cache(encoder: TextEncoder, sequences: Iterable[Sequence[int]], root: str | Path,
                            progress: bool = False) -> TokenStateCache:
    """The cache of ``sequences`` under ``root`` (built on first use, atomically; loaded after).

    :param encoder: a frozen tower (``config.freeze``); its weights are part of the cache key
    :param sequences: token-id sequences as the tower reads them (``[CLS] ... [SEP]``, unpadded)
    """
    if not encoder.config.freeze:
        raise ValueError("token states can only be cached for a frozen text tower (text.freeze=True)")
    seqs = unique_sequences(sequences)
    if not seqs:
        raise ValueError("no sequences to cache")
    folder = cache_folder(Path(root), encoder, seqs)
    if all((folder / f).is_file() for f in _FILES):
        log.info("token-state cache: %d sequences from %s", len(seqs), folder)
        return load_cache(folder)
    log.info("token-state cache: computing %d sequences into %s", len(seqs), folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ids, offsets, tokens, cls, pooled = compute_states(encoder, seqs, progress=progress, folder=tmp)
    np.save(tmp / "offsets.npy", offsets)
    for arr in (ids, tokens, cls, pooled):
        if isinstance(arr, np.memmap):
            arr.flush()
    (tmp / "info.json").write_text(json.dumps({"format": FORMAT, "n_sequences": len(seqs), "n_tokens": int(offsets[-1]),
                                               "dim": int(tokens.shape[1]), "last_layers": encoder.config.last_layers}))
    del ids, tokens, cls, pooled
    if folder.exists() and not all((folder / f).is_file() for f in _FILES):  # an incomplete earlier attempt
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        # Another process (a second run, another node) finished the same cache first: use theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not all((folder / f).is_file() for f in _FILES):
            raise
    return load_cache(folder)

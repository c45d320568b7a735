"""The locked text tower and its token-state cache: same states as running the tower, keyed by
model and sequences, and a training run that is the same with and without the cache."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from localign.data.text import SpecialTokens, collate_reports, tower_sequences
from localign.data.tokenize import tokenize_sentences
from localign.data.text import TextInputConfig
from localign.models.config import TextEncoderConfig
from localign.models.text import TextEncoder
from localign.models.text_cache import build_token_state_cache

from .helpers import TINY_TEXT
from .test_train import tiny_config

REPORTS = [
    ["Small left pleural effusion.", "The heart is enlarged."],
    ["Lungs are clear.", "No pneumothorax.", "Right apical pneumothorax is not seen."],
    ["Left basilar atelectasis."],
]


def frozen_tower(seed: int = 0, last_layers: int = 1) -> TextEncoder:
    torch.manual_seed(seed)
    return TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT, freeze=True, last_layers=last_layers))


def token_reports(tokenizer) -> list[list[list[int]]]:
    return [tokenize_sentences(r, tokenizer, 64) for r in REPORTS]


@pytest.mark.parametrize("last_layers", [1, 2])
def test_cached_states_equal_running_the_frozen_tower(tokenizer, tmp_path, last_layers):
    tower = frozen_tower(last_layers=last_layers)
    special = SpecialTokens.from_tokenizer(tokenizer)
    config = TextInputConfig(mode="joint", max_length=64)
    reports = token_reports(tokenizer)
    cache = build_token_state_cache(tower, tower_sequences(reports, config, special), tmp_path)
    # Whole reports and single sentences (one random sentence), padded to the batch's longest.
    for batch_reports in (reports, [[r[0]] for r in reports], [[r[-1]] for r in reports]):
        text = collate_reports(batch_reports, config, special)
        tower.state_cache = None
        expected = tower(text.input_ids, text.attention_mask)
        tower.state_cache = cache
        got = tower(text.input_ids, text.attention_mask)
        valid = text.attention_mask.bool()
        assert torch.allclose(got.tokens[valid], expected.tokens[valid], atol=1e-5)
        assert torch.all(got.tokens[~valid] == 0) and torch.all(expected.tokens[~valid] == 0)
        assert torch.allclose(got.cls, expected.cls, atol=1e-5)
        assert torch.allclose(got.pooled, expected.pooled, atol=1e-5)
    assert cache.misses == 0 and cache.hits == 9


def test_a_sequence_missing_from_the_cache_runs_through_the_tower(tokenizer, tmp_path):
    tower = frozen_tower()
    special = SpecialTokens.from_tokenizer(tokenizer)
    config = TextInputConfig(mode="joint", max_length=64)
    reports = token_reports(tokenizer)
    cache = build_token_state_cache(tower, tower_sequences(reports, config, special), tmp_path)
    shuffled = [list(reversed(r)) for r in reports]  # LoVT-style swapped orders: new sequences
    text = collate_reports(shuffled, config, special)
    expected = tower(text.input_ids, text.attention_mask)
    tower.state_cache = cache
    got = tower(text.input_ids, text.attention_mask)
    assert cache.misses == 2 and cache.hits == 1  # the one-sentence report reversed is itself
    valid = text.attention_mask.bool()
    assert torch.allclose(got.tokens[valid], expected.tokens[valid], atol=1e-5)


def test_sentences_mode_reads_the_single_sentence_entries(tokenizer, tmp_path):
    tower = frozen_tower()
    special = SpecialTokens.from_tokenizer(tokenizer)
    config = TextInputConfig(mode="sentences", max_length=64)
    reports = token_reports(tokenizer)
    cache = build_token_state_cache(tower, tower_sequences(reports, config, special), tmp_path)
    text = collate_reports(reports, config, special)
    b, m, t = text.input_ids.shape
    ids, att = text.input_ids.reshape(b * m, t), text.attention_mask.reshape(b * m, t)
    real = att.sum(1) > 0
    expected = tower(ids[real], att[real])
    tower.state_cache = cache
    got = tower(ids[real], att[real])
    assert cache.misses == 0 and cache.hits == int(real.sum())
    assert torch.allclose(got.cls, expected.cls, atol=1e-5)


def test_the_cache_is_keyed_by_weights_layers_and_sequences(tokenizer, tmp_path, monkeypatch):
    import localign.models.text_cache as tc

    special = SpecialTokens.from_tokenizer(tokenizer)
    config = TextInputConfig(mode="joint", max_length=64)
    seqs = tower_sequences(token_reports(tokenizer), config, special)
    calls = []
    real = tc.compute_states
    monkeypatch.setattr(tc, "compute_states", lambda *a, **k: calls.append(1) or real(*a, **k))
    build_token_state_cache(frozen_tower(0), seqs, tmp_path)
    build_token_state_cache(frozen_tower(0), seqs, tmp_path)  # same tower, same data: read from disk
    assert len(calls) == 1
    build_token_state_cache(frozen_tower(1), seqs, tmp_path)  # other weights
    build_token_state_cache(frozen_tower(0, last_layers=2), seqs, tmp_path)  # other token states
    build_token_state_cache(frozen_tower(0), seqs[1:], tmp_path)  # other data (or tokenizer: other ids)
    assert len(calls) == 4
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 4


def test_a_locked_tower_has_no_trainable_weights_and_no_dropout(tokenizer):
    tower = frozen_tower()
    tower.train()
    assert not any(p.requires_grad for p in tower.parameters())
    assert not tower.bert.training
    special = SpecialTokens.from_tokenizer(tokenizer)
    text = collate_reports(token_reports(tokenizer), TextInputConfig(mode="joint", max_length=64), special)
    a, b = tower(text.input_ids, text.attention_mask), tower(text.input_ids, text.attention_mask)
    assert torch.equal(a.tokens, b.tokens) and not a.tokens.requires_grad
    with pytest.raises(ValueError, match="frozen text tower"):
        build_token_state_cache(TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT)), [[101, 102]], "/tmp")


def _val_metrics(run_dir) -> pd.DataFrame:
    h = pd.read_csv(run_dir / "metrics.csv")
    h = h[(h.phase == "val") & ~h.name.str.endswith("time_s")]
    return h.reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convirt", "local_mi_cpc"])
def test_training_with_the_cache_equals_training_without_it(tiny_prepared, tmp_path, monkeypatch, name):
    monkeypatch.setenv("LOCALIGN_CACHE", str(tmp_path / "cache"))
    from localign.train import pretrain
    from localign.train.config import with_overrides

    runs = {}
    for label, cached in (("cached", True), ("again", True), ("uncached", False)):
        cfg = with_overrides(tiny_config(name, tiny_prepared, tmp_path / label, max_steps=3, batch_size=8),
                             overrides={"text.freeze": True, "text_input.sentence_shuffling": None}, text_cache=cached)
        pretrain(cfg)
        runs[label] = _val_metrics(tmp_path / label)
    assert len(runs["cached"]) > 5
    pd.testing.assert_frame_equal(runs["cached"], runs["again"])  # deterministic: identical metrics
    pd.testing.assert_series_equal(runs["cached"]["name"], runs["uncached"]["name"])
    # The cache serves states computed without padding, the tower pads to the batch: equal to float
    # rounding (1e-6), which three optimizer steps amplify a little (ranks of a tiny random model
    # have near-ties, so only the losses are compared after training).
    loss = {k: v.set_index("name").loc["val/loss", "value"] for k, v in runs.items()}
    assert abs(loss["cached"] - loss["uncached"]) <= 1e-2 * abs(loss["uncached"])
    first = {label: pd.read_csv(tmp_path / label / "metrics.csv").query("phase == 'train' and name == 'loss'")["value"].iloc[0]
             for label in ("cached", "uncached")}
    assert abs(first["cached"] - first["uncached"]) < 1e-5  # the first step, before any update, is the same


def test_bf16_native_is_bf16_exactly_where_the_device_computes_it(monkeypatch):
    from localign.train import runtime
    from localign.train.config import TrainConfig

    cfg = TrainConfig(method="convirt", amp="bf16_native")
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    assert runtime.amp_settings(cfg, cpu) == (torch.bfloat16, False)
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert runtime.amp_settings(cfg, cpu) == (None, False)  # emulated bf16 would be slower: float32
    with pytest.raises(ValueError, match="bf16_native"):
        runtime.amp_settings(TrainConfig(method="convirt", amp="bf17"), cpu)


@pytest.mark.slow
def test_two_bf16_runs_give_identical_metrics(tiny_prepared, tmp_path, monkeypatch):
    """The demo recipe's bf16 autocast stays deterministic on CPU (same parameters, same metrics)."""
    monkeypatch.setenv("LOCALIGN_CACHE", str(tmp_path / "cache"))
    from localign.train import pretrain
    from localign.train.config import with_overrides

    runs = {}
    for label in ("a", "b"):
        cfg = with_overrides(tiny_config("convirt", tiny_prepared, tmp_path / label, max_steps=3, batch_size=8),
                             overrides={"text.freeze": True, "text_input.sentence_shuffling": None,
                                        "text_input.sentence_sampling": None}, amp="bf16", deterministic=True)
        pretrain(cfg)
        runs[label] = _val_metrics(tmp_path / label)
    assert len(runs["a"]) > 5
    pd.testing.assert_frame_equal(runs["a"], runs["b"])

"""Encoders, pooling functions, heads, configs and the method registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from localign.config import load_config, save_config
from localign.data.text import SpecialTokens, TextBatch, assemble_joint, collate_reports, random_sentence_swaps, swap_laterality
from localign.models import build_model, get_method, list_methods
from localign.data.text import TextInputConfig
from localign.models.config import ImageEncoderConfig, MethodConfig
from localign.models.embeddings import ImageEmbeddings, ReportEmbeddings
from localign.models.heads import AttentionPool, ConcatCritic, LoVTAlignment, ProjectionHead, SelfAttentionAggregator, sincos_positional_encoding_2d
from localign.models.image import ImageEncoder
from localign.models.registry import LOVT_ABLATIONS
from localign.models.text import masked_max, merge_word_pieces, sentence_max_pool

from .helpers import TINY_TEXT, tiny_method

SP = SpecialTokens(cls=101, sep=102, pad=0)


# --- image encoder -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, layer, pool, size, grid, c_region, c_pooled",
    [
        ("resnet18", "layer4", "avg", 128, (4, 4), 512, 512),
        ("resnet18", "layer3", "avg", 128, (8, 8), 256, 512),
        ("resnet50", "layer4", "avg", 224, (7, 7), 2048, 2048),  # LoVT: 7x7x2048 at 224
        ("liao_resnet6", "layer5", "avg2x2_flatten", 256, (8, 8), 128, 768),  # repository: z 768, z_local 8x8x128
        ("liao_resnet5", "layer5", "avg", 256, (4, 4), 512, 512),  # paper: 4x4x512 local features
    ],
)
def test_image_encoder_grids(arch, layer, pool, size, grid, c_region, c_pooled):
    in_ch = 1 if arch.startswith("liao") else 3
    enc = ImageEncoder(ImageEncoderConfig(arch=arch, region_layer=layer, global_pool=pool, in_channels=in_ch)).eval()
    with torch.no_grad():
        f = enc(torch.randn(2, 1, size, size))
    assert f.grid == grid
    assert f.regions.shape == (2, grid[0] * grid[1], c_region)
    assert f.pooled.shape == (2, c_pooled)
    assert enc.region_channels == c_region and enc.pooled_channels == c_pooled


def test_regions_are_row_major_and_pool_is_their_mean():
    enc = ImageEncoder(ImageEncoderConfig(arch="resnet18", region_layer="layer4")).eval()
    with torch.no_grad():
        f = enc(torch.randn(1, 1, 128, 128))
        last = enc.stage_maps(torch.randn(1, 1, 128, 128))  # noqa: F841  (stage_maps must run standalone)
    # region k = h * W + w
    assert torch.equal(f.region_map[0, :, 1, 2], f.regions[0, 1 * f.grid[1] + 2])
    assert torch.allclose(f.pooled, f.regions.mean(1), atol=1e-5)


def test_upsampling_gives_gloria_grid():
    enc = ImageEncoder(ImageEncoderConfig(arch="resnet18", region_layer="layer3", upsample_to=299)).eval()
    with torch.no_grad():
        f = enc(torch.randn(1, 1, 224, 224))
    assert f.grid == (19, 19)  # GLoRIA/LIMITR: 361 regions


def test_grayscale_is_replicated_not_rejected():
    enc = ImageEncoder(ImageEncoderConfig(arch="resnet18")).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc(x).pooled, enc(x.expand(-1, 3, -1, -1)).pooled)
    with pytest.raises(ValueError, match="input channels"):
        enc(torch.randn(2, 2, 64, 64))


def test_image_encoder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown image encoder arch"):
        ImageEncoder(ImageEncoderConfig(arch="vgg"))
    with pytest.raises(ValueError, match="region_layer 'layer5' is not a stage"):
        ImageEncoder(ImageEncoderConfig(arch="resnet18", region_layer="layer5"))
    with pytest.raises(FileNotFoundError, match="weights not found"):
        ImageEncoder(ImageEncoderConfig(arch="resnet18", weights=str(tmp_path / "nope.pt")))


def test_imagenet_weights_offline_error_is_clear(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    import torchvision.models._api as api

    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", no_network)
    with pytest.raises(RuntimeError, match="ImageNet weights for resnet18 are not cached"):
        ImageEncoder(ImageEncoderConfig(arch="resnet18", weights="imagenet"))


def test_torchvision_state_dict_loads(tmp_path):
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    enc = ImageEncoder(ImageEncoderConfig(arch="resnet18", weights=str(tmp_path / "r18.pt")))
    assert torch.equal(enc.stages["layer1"][0].conv1.weight, net.layer1[0].conv1.weight)


# --- pooling functions -------------------------------------------------------------------------------


def test_sentence_max_pool_known_values_and_zero_padding():
    tokens = torch.tensor([[[1.0, 5.0], [3.0, 2.0], [9.0, 9.0], [0.0, 7.0], [4.0, 4.0]]])
    sent_ids = torch.tensor([[-1, 0, 0, 1, -1]])  # [CLS] s0 s0 s1 [SEP]
    out, mask = sentence_max_pool(tokens, sent_ids, n_sentences=3)
    assert torch.equal(out[0, 0], torch.tensor([9.0, 9.0]))
    assert torch.equal(out[0, 1], torch.tensor([0.0, 7.0]))
    assert torch.equal(out[0, 2], torch.zeros(2))  # padded slot is exactly zero (LoVT)
    assert mask.tolist() == [[True, True, False]]


def test_sentence_max_pool_ignores_special_tokens():
    tokens = torch.randn(2, 6, 4)
    ids = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, 0, 1, 1, 1, -1]])
    a, _ = sentence_max_pool(tokens, ids)
    tokens2 = tokens.clone()
    tokens2[ids < 0] = 100.0
    b, _ = sentence_max_pool(tokens2, ids)
    assert torch.equal(a, b)


def test_merge_word_pieces_sums_continuations():
    tokens = torch.arange(12, dtype=torch.float).reshape(1, 6, 2)
    word_ids = torch.tensor([[0, 1, 2, 2, 2, -1]])  # [CLS] w1 w2 ##a ##b [SEP]
    words, mask = merge_word_pieces(tokens, word_ids)
    assert words.shape == (1, 3, 2)
    assert torch.equal(words[0, 2], tokens[0, 2] + tokens[0, 3] + tokens[0, 4])
    assert mask.tolist() == [[True, True, True]]


def test_masked_max_and_all_masked_row():
    x = torch.tensor([[[1.0], [5.0]], [[2.0], [3.0]]])
    m = torch.tensor([[True, False], [False, False]])
    assert masked_max(x, m).tolist() == [[1.0], [0.0]]


def test_text_encoder_word_ids_follow_wordpieces(tokenizer):
    from localign.models.text import TextEncoder
    from localign.models.config import TextEncoderConfig

    enc = TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT))
    batch = tokenizer(["small left pleural effusion"], return_tensors="pt")
    pieces = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    ids = enc.word_ids(batch["input_ids"], batch["attention_mask"])[0].tolist()
    assert ids[0] == 0 and ids[-1] == -1  # [CLS] is word 0, [SEP] excluded
    for piece, prev, cur in zip(pieces[2:-1], ids[1:-2], ids[2:-1]):
        assert (cur == prev) == piece.startswith("##")
    assert max(ids) == len("small left pleural effusion".split())


def test_text_encoder_released_slots_keep_sep_and_mark_pads(tokenizer):
    from localign.models.config import TextEncoderConfig
    from localign.models.text import TextEncoder

    enc = TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT))
    batch = tokenizer(["small left pleural effusion", "left"], return_tensors="pt", padding="max_length", max_length=12)
    slots = enc.released_slot_ids(batch["input_ids"], batch["attention_mask"])
    words = enc.word_ids(batch["input_ids"], batch["attention_mask"])
    for row, (s, w, mask) in enumerate(zip(slots.tolist(), words.tolist(), batch["attention_mask"].tolist())):
        n = sum(mask)  # [CLS] ... [SEP]
        assert s[n - 1] == max(w) + 1  # [SEP] opens the slot after the last word
        assert s[: n - 1] == w[: n - 1] and all(v == -1 for v in s[n:])  # same merging; pads have no slot
    assert slots[1].tolist()[:4] == [0, 1, 2, -1]  # [CLS] left [SEP] [PAD]


def test_text_encoder_freezing(tokenizer):
    from localign.models.config import TextEncoderConfig
    from localign.models.text import TextEncoder

    enc = TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT, freeze_embeddings=True, freeze_layers=1))
    assert not any(p.requires_grad for p in enc.bert.embeddings.parameters())
    assert not any(p.requires_grad for p in enc.bert.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in enc.bert.encoder.layer[1].parameters())
    with pytest.raises(ValueError, match="cannot freeze 5 layers"):
        TextEncoder(TextEncoderConfig(model="minilm", random_init=True, tiny=TINY_TEXT, freeze_layers=5))


def test_offline_text_model_error_is_clear(monkeypatch):
    from localign.data.tokenize import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not load 'emilyalsentzer/Bio_ClinicalBERT'.*minilm"):
        load_tokenizer("emilyalsentzer/Bio_ClinicalBERT")


# --- text assembly -----------------------------------------------------------------------------------


def test_assemble_joint_drops_overflowing_sentences_like_lovt():
    sents = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    ids, sids = assemble_joint(sents, SP, max_length=8, overflow="drop_sentences")  # budget 6
    assert ids == [101, 1, 2, 3, 4, 5, 102]  # sentence 2 does not fit: it and every later one are dropped
    assert sids == [-1, 0, 0, 0, 1, 1, -1]
    ids, sids = assemble_joint(sents, SP, max_length=8, overflow="truncate")
    assert ids == [101, 1, 2, 3, 4, 5, 6, 102] and sids[-2] == 2
    ids, _ = assemble_joint([[1] * 20], SP, max_length=8)  # a single long first sentence is truncated
    assert ids == [101] + [1] * 6 + [102]


def test_collate_joint_and_sentences_modes():
    reports = [[[1, 2], [3]], [[4, 5, 6]]]
    tb = collate_reports(reports, TextInputConfig(mode="joint", max_length=16), SP)
    assert tb.input_ids.tolist() == [[101, 1, 2, 3, 102], [101, 4, 5, 6, 102]]
    assert tb.sentence_mask.tolist() == [[True, True], [True, False]]
    tb = collate_reports(reports, TextInputConfig(mode="sentences", max_length=16), SP)
    assert tb.input_ids.shape == (2, 2, 5)
    assert tb.input_ids[0, 1, :3].tolist() == [101, 3, 102]
    assert tb.attention_mask[1, 1].sum() == 0  # padded sentence slot
    tb = collate_reports(reports, TextInputConfig(mode="joint", max_length=10, pad_to_max_length=True), SP)
    assert tb.input_ids.shape == (2, 10)


def test_sentence_swaps_keep_every_sentence_and_follow_geometric_count():
    import numpy as np

    rng = np.random.default_rng(0)
    sents = list(range(6))
    changed = 0
    for _ in range(2000):
        out = random_sentence_swaps(sents, 0.6, rng)
        assert sorted(out) == sents
        changed += out != sents
    # P(no swap) = 0.4 and a swap can be a no-op (i == j, 1/6): P(unchanged) is a bit above 0.4
    assert 0.40 < 1 - changed / 2000 < 0.52


def test_swap_laterality():
    assert swap_laterality("Left effusion, right lung clear. LEFT") == "Right effusion, left lung clear. RIGHT"
    assert swap_laterality("leftover bright") == "leftover bright"


# --- heads -------------------------------------------------------------------------------------------


def test_projection_head_bn_statistics_include_padded_rows():
    head = ProjectionHead(4, 8, 3, norm="batch").train()
    x = torch.randn(2, 3, 4)
    x[1, 2] = 0.0  # a padded sentence slot
    head(x)
    mean_with_pad = head.norm.running_mean.clone()
    head2 = ProjectionHead(4, 8, 3, norm="batch").train()
    head2.load_state_dict({k: v for k, v in head.state_dict().items() if "running" not in k and "num_batches" not in k}, strict=False)
    head2(x.reshape(-1, 4)[:5])  # the same rows without the padded one
    assert not torch.allclose(mean_with_pad, head2.norm.running_mean)


def test_attention_pool_weights_sum_to_one_and_ignore_padding():
    pool = AttentionPool(16, num_heads=4)
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    y, w = pool(x, mask)
    assert y.shape == (3, 16) and w.shape == (3, 5)
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert torch.all(w[~mask] == 0)
    x2 = x.clone()
    x2[~mask] = 123.0  # padded values do not matter
    assert torch.allclose(pool(x2, mask)[0], y, atol=1e-6)


def test_lovt_alignment_masks_sentences_and_shares_the_key_projection():
    align = LoVTAlignment(8).eval()
    z_img, z_rep = torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    r2i, i2r, scores = align(z_img, z_rep, mask)
    assert r2i.shape == (2, 4, 8) and i2r.shape == (2, 3, 8) and scores.shape == (2, 4, 3)
    z_rep2 = z_rep.clone()
    z_rep2[0, 2] = 50.0
    r2i_b, _, _ = align(z_img, z_rep2, mask)
    assert torch.allclose(r2i, r2i_b, atol=1e-6)  # a padded sentence is never attended to
    # one shared projection as query and key: the scores are a symmetric bilinear form
    k = align.key
    expected = torch.einsum("kd,md->km", k(z_img[0]), k(z_rep[0])) / 8**0.5
    assert torch.allclose(scores[0], expected, atol=1e-6)


def test_self_attention_aggregator_unit_norm_and_mask():
    sa = SelfAttentionAggregator(8, dropout=0.0)
    a = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, q = sa(a, mask)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(q.sum(-1), torch.ones(2), atol=1e-6) and torch.all(q[~mask] == 0)


def test_positional_encoding_values():
    pe = sincos_positional_encoding_2d(2, 3, 8)
    assert pe.shape == (6, 8)
    # region (y=1, x=2): omega = [1, 1e-4]; [sin(2w), cos(2w), sin(1w), cos(1w)]
    omega = torch.tensor([1.0, 1e-4])
    expected = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega), torch.sin(omega), torch.cos(omega)])
    assert torch.allclose(pe[1 * 3 + 2], expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positional_encoding_2d(2, 2, 6)


def test_concat_critic_pairwise_equals_explicit_concatenation():
    critic = ConcatCritic(3, 5, hidden=(7, 4))
    a, b = torch.randn(4, 3), torch.randn(6, 5)
    explicit = torch.stack([torch.stack([critic.rest(critic.first(torch.cat([a[i], b[j]]))).squeeze(-1) for j in range(6)]) for i in range(4)])
    assert torch.allclose(critic.pairwise(a, b), explicit, atol=1e-6)
    ra, sb = torch.randn(2, 3, 3), torch.randn(2, 4, 5)
    local = critic.pairwise_local(ra, sb)
    assert local.shape == (2, 2, 3, 4)
    assert torch.allclose(local[1, 0, 2, 3], critic(ra[1, 2], sb[0, 3]), atol=1e-6)


def test_concat_critic_pairwise_local_with_sentence_mask_skips_padding_only():
    torch.manual_seed(0)
    critic = ConcatCritic(3, 5, hidden=(7, 4))
    regions, sentences = torch.randn(3, 4, 3, requires_grad=True), torch.randn(3, 5, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    full = critic.pairwise_local(regions, sentences)
    packed = critic.pairwise_local(regions, sentences, mask)
    real = mask[None, :, None, :].expand_as(full)
    assert packed.shape == full.shape == (3, 3, 4, 5)
    assert torch.allclose(packed[real], full[real], atol=1e-6)
    assert (packed[~real] == 0).all()
    # the local objective ignores padded slots, so both give the same value and gradients
    from localign.losses import local_mi_objective

    grads = []
    for scores in (full, packed):
        regions.grad = sentences.grad = None
        value = local_mi_objective(scores, mask)
        value.backward(retain_graph=True)
        grads.append((value.detach(), regions.grad.clone(), sentences.grad.clone()))
    for x, y in zip(*grads):
        assert torch.allclose(x, y, atol=1e-6)
    with pytest.raises(ValueError, match="b_mask"):
        critic.pairwise_local(regions, sentences, mask[:, :4])


# --- configs and registry ----------------------------------------------------------------------------


def test_every_method_config_round_trips_through_yaml(tmp_path):
    for name in list_methods():
        cfg = get_method(name)
        assert MethodConfig.from_dict(cfg.to_dict()) == cfg, name


def test_save_and_load_config_yaml(tmp_path):
    cfg = get_method("limitr").image
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(type(cfg), tmp_path / "c.yaml") == cfg


def test_registry_paper_defaults():
    lovt = get_method("lovt")
    assert (lovt.image.region_layer, lovt.optim.batch_size, lovt.optim.accumulate, lovt.optim.lr) == ("layer4", 32, 16, 1e-4)
    assert (lovt.loss.local_temperature, lovt.loss.weight_a2b, lovt.loss.local_image_weight / 2) == (0.3, 0.75, 0.375)
    limitr = get_method("limitr")
    assert (limitr.image.region_layer, limitr.image.upsample_to, limitr.text_input.max_length, limitr.optim.grad_clip) == ("layer3", 299, 97, 0.25)
    assert get_method("limitr_code").loss.internal_weight == 0 and not get_method("limitr_code").loss.positional_encoding
    assert get_method("local_mi_cpc").loss.critic_hidden == (1024, 512)
    assert get_method("convirt").head.norm is None and get_method("clip").head.norm == "batch"


def test_every_lovt_ablation_is_a_preset_of_the_same_code():
    for name in LOVT_ABLATIONS:
        cfg = get_method(name)
        assert cfg.family in ("lovt", "global_contrastive"), name
    assert get_method("lovt_no_spatial").loss.spatial_smooth is False
    assert get_method("lovt_no_weight").loss.local_weights == "uniform"


def test_unknown_method_and_bad_override():
    with pytest.raises(ValueError, match="unknown method 'lvot'"):
        get_method("lvot")
    with pytest.raises(ValueError, match="unknown field 'archh'"):
        get_method("lovt", **{"image.archh": "resnet18"})
    with pytest.raises(ValueError, match="needs a LoVTLossConfig"):
        dataclasses.replace(get_method("lovt"), family="lovt", loss=get_method("convirt").loss)


# --- methods -----------------------------------------------------------------------------------------


def _batch(tokenizer, method: MethodConfig, reports, size=64, b=None):
    from localign.data.tokenize import tokenize_sentences

    special = SpecialTokens.from_tokenizer(tokenizer)
    ids = [tokenize_sentences(r, tokenizer, method.text_input.max_length) for r in reports]
    text = collate_reports(ids, method.text_input, special)
    return torch.randn(len(reports), 1, size, size), text


REPORTS = [["Heart size is normal.", "There is a small left pleural effusion."], ["Right lower lobe consolidation."],
           ["Lungs are clear.", "No pneumothorax.", "Mild edema."], ["Cardiomegaly."]]


@pytest.mark.parametrize("name", ["convirt", "clip", "lovt", "gloria", "limitr", "global_mi_cpc", "local_mi_mine"])
def test_method_forward_backward_retrieval_and_grounding(tokenizer, name):
    torch.manual_seed(0)
    method = tiny_method(name)
    model = build_model(method)
    size = method.image.input_size
    images, text = _batch(tokenizer, method, REPORTS, size=size)
    out = model(images, text, torch.arange(4))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    assert any(n.startswith("image_encoder") for n in trainable) and any(n.startswith("text_encoder") for n in trainable)
    model.eval()
    with torch.no_grad():
        scores = model.similarity(model.encode_images(images), model.encode_reports(text))
        maps = model.region_text_similarity(images, text)
    assert scores.shape == (4, 4) and torch.isfinite(scores).all()
    assert maps.dim() == 3 and maps.shape[0] == 4 and torch.isfinite(maps).all()


def test_gloria_retrieval_attends_with_the_caption_words_only(tokenizer):
    """Gloria.similarity = ½(5·max_t cos(w_t, c_t) + cos(global)), with c_t attended by words 1..n only
    (GLoRIA's get_local_similarities), so a report's scores do not depend on the batch's padding."""
    torch.manual_seed(0)
    model = build_model(tiny_method("gloria")).eval()
    images, text = _batch(tokenizer, model.config, REPORTS, size=model.config.image.input_size)
    with torch.no_grad():
        img, rep = model.encode_images(images), model.encode_reports(text)
        scores = model.similarity(img, rep, chunk=3)
        _, one = _batch(tokenizer, model.config, [REPORTS[3]], size=model.config.image.input_size)
        alone = model.similarity(img, model.encode_reports(one))
    glob = torch.nn.functional.normalize(img.global_embedding, dim=-1) @ torch.nn.functional.normalize(rep.global_embedding, dim=-1).T
    expected = torch.zeros(4, 4)
    for i in range(4):
        n = int(rep.word_mask[i].sum()) - 1  # words without [CLS]
        w = rep.words[i, 1 : n + 1]
        assert n >= 1 and not rep.word_mask[i, n + 1 :].any()
        for j in range(4):
            v = img.local[j]
            alpha = torch.softmax(4.0 * torch.softmax(w @ v.T, dim=0), dim=1)
            c = alpha @ v
            cos = (w * c).sum(-1) / (w.norm(dim=-1) * c.norm(dim=-1)).clamp(min=1e-8)
            expected[j, i] = 0.5 * (5.0 * cos.max() + glob[j, i])
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.allclose(alone[:, 0], scores[:, 3], atol=1e-5)  # "Cardiomegaly." is the shortest report


def test_limitr_chunked_pair_scoring_gives_the_same_loss_and_gradients(tokenizer):
    """``loss.pair_chunk`` trades memory for recomputation; the loss and gradients must not change."""
    grads = {}
    for chunk in (None, 3):
        torch.manual_seed(0)
        model = build_model(tiny_method("limitr", **{"loss.sa_dropout": 0.0, "loss.pair_chunk": chunk}))
        images, text = _batch(tokenizer, model.config, REPORTS)
        out = model(images, text, torch.arange(4))
        out.loss.backward()
        grads[chunk] = (out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (loss_full, g_full), (loss_chunk, g_chunk) = grads[None], grads[3]
    assert torch.allclose(loss_full, loss_chunk, atol=1e-5)
    assert g_full.keys() == g_chunk.keys()
    for name in g_full:
        assert torch.allclose(g_full[name], g_chunk[name], atol=1e-5, rtol=1e-4), name
    with pytest.raises(ValueError, match="pair_chunk"):
        build_model(tiny_method("limitr", **{"loss.pair_chunk": 0}))


def _released_limitr_internal_loss(tokens, token_strings, regions, aggregate, lam=4.0, tau=0.1):
    """LIMITR's released ``local_int_loss`` on its own token layout, written out from spec §3.3.

    Layout (``aggregate_tokens``): walk the tokens up to [SEP]; a ``##`` piece is summed into the
    open slot, any other token opens one, [SEP] gets its own; zero rows pad to T; [PAD] names them.
    """
    b_size, t_len, _ = tokens.shape
    layouts, pads = [], []
    for b in range(b_size):
        slots, bank = [], None
        for t, name in enumerate(token_strings[b]):
            if name == "[SEP]":
                slots += [bank, tokens[b, t]]
                break
            if name.startswith("##"):
                bank = bank + tokens[b, t]
            else:
                if bank is not None:
                    slots.append(bank)
                bank = tokens[b, t]
        pads.append([False] * len(slots) + [True] * (t_len - len(slots)))
        layouts.append(torch.stack(slots + [torch.zeros_like(tokens[b, 0])] * (t_len - len(slots))))
    words, pad = torch.stack(layouts), torch.tensor(pads)
    r_len = regions.shape[1]
    pi = (~pad).double() / (~pad).sum(1, keepdim=True)
    total = 0.0
    for b in range(b_size):
        w, v = words[b].double(), regions[b].double()
        # words over the regions: first softmax over all T positions (pads included), then over regions
        alpha = torch.softmax(lam * torch.softmax(v @ w.T, dim=1).T, dim=1)  # [T, R]
        m_w = w @ (alpha @ v).T / tau  # [t, t'] = w_t . c_t'
        row = torch.logsumexp(m_w, 1) - m_w.diagonal()
        col = torch.logsumexp(m_w, 0) - m_w.diagonal()
        word_part = 0.5 * ((pi[b] * row).sum() + (pi[b] * col).sum())
        # regions over the words: row (b, r) of the flattened attention gets the pad mask of caption (b*R + r) mod B
        first = torch.softmax(w @ v.T, dim=1).T  # [R, T], softmax over regions per word
        beta = torch.stack([torch.softmax((lam * first[r]).masked_fill(pad[(b * r_len + r) % b_size], float("-inf")), 0)
                            for r in range(r_len)])
        h = beta @ w  # [R, D]
        align = h * v
        align = align / (align.norm(dim=0, keepdim=True))  # l2norm over the region axis
        with torch.no_grad():
            _, rho = aggregate(align.float()[None])
        rho = rho[0].double()
        m_r = v @ h.T / tau
        row = torch.logsumexp(m_r, 1) - m_r.diagonal()
        col = torch.logsumexp(m_r, 0) - m_r.diagonal()
        region_part = 0.5 * ((rho * row).sum() + (rho * col).sum())
        total += float((word_part + region_part) / 2)
    return total / b_size / 10


@pytest.mark.parametrize("name", ["limitr_code", "limitr"])
def test_limitr_bug_compatible_internal_loss_matches_the_released_layout(tokenizer, name):
    """Bug-compatible mode runs the internal loss on the released token layout (all 97 positions,
    [SEP] kept, zero rows to the fixed length, π over non-[PAD]) and regions without the positional
    encoding, as the released code; its value matches a reference written from spec §3.3."""
    torch.manual_seed(0)
    model = build_model(tiny_method(name, **{"loss.internal_weight": 1.0, "loss.bug_compatible_internal_mask": True,
                                             "loss.sa_dropout": 0.0})).eval()
    images, text = _batch(tokenizer, model.config, REPORTS, size=model.config.image.input_size)
    assert text.input_ids.shape[1] == 97  # the presets pad every report to 97 tokens, as word_num: 97
    with torch.no_grad():
        internal = float(model(images, text, torch.arange(4)).terms["internal"])
        tokens = model.token_states(text).tokens
        regions = model.encode_images(images).local
    names = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in text.input_ids]
    expected = _released_limitr_internal_loss(tokens, names, regions, model.aggregate)
    assert internal == pytest.approx(expected, rel=1e-5)
    layout = model.released_word_layout(model.token_states(text), text)
    n_words = model.encode_reports(text).word_mask.sum(1)  # [CLS] + words
    assert layout.words.shape[1] == 97 and torch.equal(layout.word_mask.sum(1), n_words + 1)  # + [SEP]


def test_limitr_checkpointed_chunks_replay_their_dropout_masks(tokenizer):
    torch.manual_seed(0)
    model = build_model(tiny_method("limitr", **{"loss.sa_dropout": 0.4, "loss.pair_chunk": 3}))
    images, text = _batch(tokenizer, model.config, REPORTS)
    with torch.no_grad():
        img, rep = model.encode_images(images), model.encode_reports(text)
    keys, regions, words = (t.detach().clone().requires_grad_() for t in (img.keys, img.local, rep.words))
    mask = rep.word_mask
    weights = torch.randn(4, 4)

    def scores_and_grads(checkpointed: bool, seed: int):
        torch.manual_seed(seed)
        if checkpointed:
            s_cap, s_img = model.pair_scores(ImageEmbeddings(local=regions, keys=keys), ReportEmbeddings(words=words, word_mask=mask))
        else:  # the same chunks without checkpointing: what backward must differentiate
            parts = [model._pair_scores(keys[i : i + 3], regions[i : i + 3], words, mask) for i in (0, 3)]
            s_cap, s_img = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        loss = (weights * s_cap).sum() + (weights.T * s_img).sum()
        return loss.detach(), torch.autograd.grad(loss, [keys, regions, words])

    loss_ck, g_ck = scores_and_grads(True, seed=5)
    loss_plain, g_plain = scores_and_grads(False, seed=5)
    loss_other, _ = scores_and_grads(False, seed=6)
    assert not torch.allclose(loss_plain, loss_other)  # dropout is active: the seed matters
    assert torch.allclose(loss_ck, loss_plain, atol=1e-6)
    for a, b in zip(g_ck, g_plain):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_method_text_mode_mismatch_is_rejected():
    with pytest.raises(ValueError, match="reads text mode"):
        build_model(tiny_method("lovt", **{"text_input.mode": "sentences"}))


def test_lovt_zero_weight_ablation_skips_the_term(tokenizer):
    model = build_model(tiny_method("lovt_local_report_only"))
    images, text = _batch(tokenizer, model.config, REPORTS)
    terms = model(images, text).terms
    assert "global" in terms and "local_report_z2att" in terms and "local_image_z2att" not in terms


def test_gloria_similarity_gives_a_caption_without_words_minus_infinity():
    import torch

    from localign.models import build_model

    from .helpers import tiny_method

    torch.manual_seed(0)
    model = build_model(tiny_method("gloria")).eval()
    regions, glob = torch.randn(3, 16, 16), torch.randn(3, 16)
    words = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])  # caption 1: [CLS] only
    rep = ReportEmbeddings(global_embedding=torch.randn(2, 16), words=words, word_mask=mask)
    scores = model.similarity(ImageEmbeddings(global_embedding=glob, local=regions), rep)
    assert scores.shape == (3, 2)
    assert torch.isfinite(scores[:, 0]).all() and torch.isneginf(scores[:, 1]).all()


def test_each_method_class_declares_its_family_once():
    """One family registry: the classes declare family and loss config; MethodConfig and build_model read it."""
    from localign.models.config import FAMILIES, MethodConfig, family_loss_config
    from localign.models.methods import PretrainModel

    assert set(FAMILIES) == {"global_contrastive", "lovt", "mi", "gloria", "limitr"}
    for family, cls in FAMILIES.items():
        assert cls.family == family and family_loss_config(family) is cls.loss_config
    for name in list_methods():
        cfg = get_method(name)
        assert isinstance(cfg.loss, FAMILIES[cfg.family].loss_config) and MethodConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown method family 'nope'"):
        MethodConfig.from_dict({**get_method("convirt").to_dict(), "family": "nope"})
    with pytest.raises(TypeError, match="declared by both"):
        type("Impostor", (PretrainModel,), {"family": "lovt", "loss_config": object})


# Fields each family's embedding records fill (the rest stay None).
RECORD_FIELDS = {
    "convirt": ({"global_embedding"}, {"global_embedding"}),
    "clip": ({"global_embedding"}, {"global_embedding"}),
    "lovt": ({"global_embedding"}, {"global_embedding"}),
    "gloria": ({"global_embedding", "local"}, {"global_embedding", "words", "word_mask"}),
    "limitr": ({"global_embedding", "local", "keys"}, {"global_embedding", "words", "word_mask"}),
    "global_mi_cpc": ({"global_embedding"}, {"global_embedding"}),
    "local_mi_cpc": ({"local"}, {"local", "local_mask"}),
}


@pytest.mark.parametrize("name", sorted(RECORD_FIELDS))
def test_embedding_records_have_their_shapes_and_chunks_concatenate_to_one_shot_encoding(tokenizer, name):
    torch.manual_seed(0)
    model = build_model(tiny_method(name)).eval()
    size = model.config.image.input_size
    images, text = _batch(tokenizer, model.config, REPORTS, size=size)
    with torch.no_grad():
        img, rep = model.encode_images(images), model.encode_reports(text)
        # Two batches of reports with different word counts: cat pads the words. Both batches have
        # three-sentence reports, as LoVT's attention pool sees padded sentence slots.
        reports = [REPORTS[2], REPORTS[0], REPORTS[1], ["Lungs are clear.", "No effusion.", "Heart size is normal."]]
        rep_all = model.encode_reports(_batch(tokenizer, model.config, reports, size=size)[1])
        chunks_img = [model.encode_images(images[:3]), model.encode_images(images[3:])]
        chunks_rep = [model.encode_reports(_batch(tokenizer, model.config, part, size=size)[1]) for part in (reports[:2], reports[2:])]
        joined_img, joined_rep = ImageEmbeddings.cat(chunks_img), ReportEmbeddings.cat(chunks_rep)
        one_shot, chunked = model.similarity(img, rep_all), model.similarity(joined_img, joined_rep)
    image_fields, report_fields = RECORD_FIELDS[name]
    assert set(img.tensors()) == image_fields and set(rep.tensors()) == report_fields
    assert len(img) == len(rep) == 4
    if img.global_embedding is not None:
        assert img.global_embedding.dim() == 2 and rep.global_embedding.shape[0] == 4
    if img.local is not None:
        k = img.local.shape[1]
        assert img.local.dim() == 3 and k >= 1 and (img.keys is None or img.keys.shape == img.local.shape)
    if rep.words is not None:
        assert rep.words.dim() == 3 and rep.word_mask.dtype == torch.bool and rep.word_mask.shape == rep.words.shape[:2]
    if rep.local is not None:
        assert rep.local.shape[:2] == (4, 3) and rep.local_mask.sum(1).tolist() == [len(r) for r in REPORTS]
    assert torch.allclose(chunked, one_shot, atol=1e-5)
    moved = img.to("cpu", dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in moved.tensors().values())
    assert torch.equal(img[1:3].tensors()[next(iter(image_fields))], img.tensors()[next(iter(image_fields))][1:3])


def test_embedding_records_check_their_fields():
    with pytest.raises(ValueError, match="batch size"):
        ImageEmbeddings(global_embedding=torch.zeros(2, 4), local=torch.zeros(3, 5, 4))
    with pytest.raises(ValueError, match="word_mask must be a bool tensor"):
        ReportEmbeddings(words=torch.zeros(2, 5, 4), word_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="emb.global"):
        ImageEmbeddings(global_embedding=torch.zeros(2, 4))["global"]
    with pytest.raises(ValueError, match="needs ImageEmbeddings.local"):
        build_model(tiny_method("gloria")).similarity(ImageEmbeddings(global_embedding=torch.zeros(2, 16)),
                                                      ReportEmbeddings(global_embedding=torch.zeros(2, 16)))
    a = ReportEmbeddings(words=torch.ones(1, 2, 3), word_mask=torch.ones(1, 2, dtype=torch.bool))
    b = ReportEmbeddings(words=torch.ones(2, 4, 3), word_mask=torch.ones(2, 4, dtype=torch.bool))
    joined = ReportEmbeddings.cat([a, b])
    assert joined.words.shape == (3, 4, 3) and joined.word_mask.sum().item() == 2 + 8 and joined.words[0, 2:].abs().sum() == 0

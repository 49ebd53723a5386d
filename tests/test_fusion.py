"""The training-time fusion module: masking, readouts, and gradient flow into both towers."""
import pytest
import torch

from ito_sweeps.models.fusion import FusionModule
from ito_sweeps.models.towers import ITOModel, build_tokenizer
from ito_sweeps.objectives import build_objective
from ito_sweeps.objectives.contrastive import nt_xent

CAPTIONS = ["a large red circle", "a small blue square left of a big green triangle"]


def batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = build_tokenizer(cfg)(CAPTIONS)  # (2, L), zero padding after end-of-text
    texts = tokens.view(1, 2, -1).expand(2, 2, -1).clone()  # (B=2, C=2, L)
    images = torch.randn(2, 2, 3, cfg.data.image_size, cfg.data.image_size, generator=g)
    return images, texts


@pytest.mark.parametrize("readout", ["cls", "mean", "token"])
def test_fusion_output_ignores_everything_after_end_of_text(fast_cfg, readout):
    cfg = fast_cfg(f"fusion.readout={readout}")
    torch.manual_seed(0)
    model = ITOModel(cfg, with_fusion=True).eval()
    if model.fusion.token is not None:
        torch.nn.init.normal_(model.fusion.token)  # a zero token would hide a wrong readout position
    pairs = build_objective(cfg).inputs.fusion_pairs
    images, texts = batch(cfg)
    garbage = texts.clone()
    eot = texts.argmax(-1, keepdim=True)
    after = torch.arange(texts.shape[-1]) > eot
    garbage[after] = torch.randint(1, 40000, (int(after.sum()),), generator=torch.Generator().manual_seed(1))
    assert not torch.equal(garbage, texts)
    with torch.no_grad():
        clean, noisy = model(images, texts, pairs), model(images, garbage, pairs)
    torch.testing.assert_close(noisy.fused, clean.fused, rtol=0, atol=1e-6)
    assert torch.allclose(clean.fused.norm(dim=-1), torch.ones(2, 2))
    # and the fused embedding does depend on the caption's real tokens
    other = texts.flip(1)
    with torch.no_grad():
        assert not torch.allclose(model(images, other, pairs).fused, clean.fused, atol=1e-4)


def test_masked_keys_are_excluded_by_hand_made_case():
    # one block, one head, identity-ish weights are not needed: compare against dropping the masked
    # tokens altogether, which is what masking keys must be equivalent to for the unmasked queries
    torch.manual_seed(0)
    fusion = FusionModule(width=16, depth=2, heads=4, mlp_ratio=2.0, readout="cls", grid_size=2).eval()
    image = torch.randn(1, 5, 16)
    text = torch.randn(1, 6, 16)
    valid = torch.tensor([[True, True, True, False, False, False]])
    with torch.no_grad():
        masked = fusion(image, text, valid)
        dropped = fusion(image, text[:, :3], valid[:, :3])
    torch.testing.assert_close(masked, dropped, rtol=0, atol=1e-6)


def test_image_positions_are_fixed_sincos_and_not_saved():
    fusion = FusionModule(width=16, depth=1, heads=4, mlp_ratio=4.0, readout="cls", grid_size=2)
    assert fusion.image_pos.shape == (5, 16)
    assert torch.equal(fusion.image_pos[0], torch.zeros(16))  # the CLS position
    assert not any("image_pos" in k for k in fusion.state_dict())
    assert "image_pos" not in dict(fusion.named_parameters())
    # a 2-D grid: patches in the same row share the first half (the 1-D embedding of the row index)
    # open_clip's MAE-style layout puts the column (w) embedding first, the row (h) second
    half = 8
    assert torch.equal(fusion.image_pos[1, half:], fusion.image_pos[2, half:])  # same row
    assert not torch.equal(fusion.image_pos[1, :half], fusion.image_pos[2, :half])  # other column


def test_fusion_loss_alone_trains_both_encoders(fast_cfg):
    cfg = fast_cfg()
    torch.manual_seed(0)
    model = ITOModel(cfg, with_fusion=True)
    images, texts = batch(cfg)
    f = model(images, texts, build_objective(cfg).inputs.fusion_pairs)
    nt_xent(f.fused[0], f.fused[1], f.logit_scale).backward()
    towers = {
        "image patch embedding": model.clip.visual.conv1.weight,
        "image projection": model.clip.visual.proj,
        "image last block": model.clip.visual.transformer.resblocks[-1].mlp.c_proj.weight,
        "text token embedding": model.clip.token_embedding.weight,
        "text position embedding": model.clip.positional_embedding,
        "text projection": model.clip.text_projection,
        "text last block": model.clip.transformer.resblocks[-1].mlp.c_proj.weight,
        "fusion": model.fusion.blocks[0].qkv.weight,
        "logit scale": model.clip.logit_scale,
    }
    for name, param in towers.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches the {name}"


def test_fusion_refuses_a_tower_without_tokens(fast_cfg):
    from ito_sweeps.config import ConfigError

    cfg = fast_cfg("model.name=RN50", "data.image_size=64")
    with pytest.raises(ConfigError, match="fusion.depth: the fusion module needs the CLS and patch tokens"):
        ITOModel(cfg, with_fusion=True)


@pytest.mark.parametrize("alignment", ["views", "captions", "views_captions"])
def test_fused_pairs_match_fusing_each_pair_by_hand(fast_cfg, alignment):
    cfg = fast_cfg(f"objective.alignment={alignment}")
    torch.manual_seed(0)
    model = ITOModel(cfg, with_fusion=True).eval()
    objective = build_objective(cfg).inputs
    g = torch.Generator().manual_seed(2)
    images = torch.randn(2, objective.views, 3, cfg.data.image_size, cfg.data.image_size, generator=g)
    tokens = build_tokenizer(cfg)(CAPTIONS)
    texts = tokens.view(1, 2, -1).expand(2, 2, -1)[:, : objective.captions].clone()
    texts[1] = texts[1].flip(0) if objective.captions == 2 else texts[1]
    with torch.no_grad():
        fused = model(images, texts, objective.fusion_pairs).fused
        for p, (v, c) in enumerate(objective.fusion_pairs):
            # one pair at a time, straight from the towers' token outputs
            _, image_tokens, _ = model._image_with_tokens(images[:, v])
            _, text_tokens = model._text_with_tokens(texts[:, c])
            image_in, text_in = model._fusion_image(image_tokens), model._fusion_text(text_tokens)
            expected = model.fusion(image_in, text_in, model._text_valid(texts[:, c]))
            torch.testing.assert_close(fused[p], expected, rtol=0, atol=1e-6)


# ---- deep feature separation's heads: training-only, like the fusion module ----------------------------


def test_separation_heads_read_the_pooled_outputs_the_towers_project(fast_cfg):
    cfg = fast_cfg("objective.name=latent_structure", "objective.latent_structure.regularizers=[sep]")
    torch.manual_seed(0)
    model = ITOModel(cfg, with_fusion=False, independent_heads=True).eval()
    images, texts = batch(cfg)
    with torch.no_grad():
        f = model(images, texts)
        assert f.image_independent.shape == f.image.shape and f.text_independent.shape == f.text.shape
        assert (f.image * f.image_independent).sum(-1).abs().max() < 0.999  # a different projection
        # given the towers' own projections, the heads must reproduce the deployed embeddings exactly
        model.independent.image.copy_(model.clip.visual.proj)
        model.independent.text.copy_(model.text_tower.text_projection)
        f = model(images, texts)
    torch.testing.assert_close(f.image_independent, f.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(f.text_independent, f.text, rtol=0, atol=1e-6)


def test_separation_loss_trains_the_heads_and_both_towers(fast_cfg):
    cfg = fast_cfg("objective.name=latent_structure", "objective.latent_structure.regularizers=[sep]")
    objective = build_objective(cfg)
    model = ITOModel(cfg, with_fusion=False, independent_heads=objective.inputs.independent_heads)
    images, texts = batch(cfg)
    objective(model(images, texts))["loss_sep"].backward()
    for name in ("independent.image", "independent.text", "clip.visual.conv1.weight", "clip.token_embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name

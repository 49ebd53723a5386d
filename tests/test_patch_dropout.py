"""The cheaper ITO mode: FLIP-style patch dropout on the later views and on the fusion input."""
import pytest
import torch
from torch import nn

from ito_sweeps import config as C
from ito_sweeps.models.fusion import FusionModule
from ito_sweeps.models.patch_dropout import keep_random_patches
from ito_sweeps.models.towers import ITOModel
from ito_sweeps.objectives import build_objective
from tests.test_fusion import batch


def test_keep_random_patches_keeps_cls_and_a_distinct_random_subset_per_row():
    torch.manual_seed(0)
    x = torch.randn(3, 1 + 16, 4)
    kept, index = keep_random_patches(x, 0.7)
    assert kept.shape == (3, 1 + 4, 4) and index.shape == (3, 4)  # floor(16 * 0.3) = 4
    assert torch.equal(kept[:, 0], x[:, 0])
    for row in range(3):
        assert len(set(index[row].tolist())) == 4
        torch.testing.assert_close(kept[row, 1:], x[row, 1 + index[row]], rtol=0, atol=0)
    assert len({tuple(sorted(r)) for r in index.tolist()}) > 1  # rows draw their own patches
    assert keep_random_patches(x, 0.99)[0].shape[1] == 2  # at least one patch stays


class KeepGiven(nn.Module):
    """Stands in open_clip's own patch-dropout slot (before ln_pre) and keeps the given patches."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, x):
        rows = torch.arange(x.shape[0])[:, None]
        return torch.cat([x[:, :1], x[:, 1:][rows, self.index]], dim=1)


def test_later_views_drop_patches_in_training_only_and_view_one_stays_exact(fast_cfg):
    cfg = fast_cfg("model.view_patch_dropout=0.5")
    torch.manual_seed(0)
    model = ITOModel(cfg, with_fusion=False).train()
    images, texts = batch(cfg)
    with torch.no_grad():
        pooled, tokens, index = model._views_with_tokens(images, 0.5)
        whole = model.encode_image(images[:, 0])
        # view 1: every patch, exactly the deployed embedding
        torch.testing.assert_close(pooled[:2], whole, rtol=0, atol=1e-6)
        assert index[0] is None and tokens[0].shape[1] == 1 + 16
        # view 2: half of the 16 patches, and the same numbers as open_clip's own forward given those patches
        assert tokens[1].shape[1] == 1 + 8 and index[1].shape == (2, 8)
        model.clip.visual.patch_dropout = KeepGiven(index[1])
        expected = model.clip.visual(images[:, 1])
        torch.testing.assert_close(pooled[2:], expected, rtol=0, atol=1e-5)
        model.clip.visual.patch_dropout = nn.Identity()
        # evaluation sees every patch of every view: the same features as a model without the key
        model.eval()
        plain = ITOModel(fast_cfg(), with_fusion=False).eval()
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(images, texts).image, plain(images, texts).image, rtol=0, atol=0)


def test_dropped_view_trains_through_the_objective_with_fusion(fast_cfg):
    cfg = fast_cfg("model.view_patch_dropout=0.75", "fusion.patch_dropout=0.5")
    objective = build_objective(cfg)
    torch.manual_seed(0)
    model = ITOModel.for_inputs(cfg, objective.inputs).train()
    lengths = []
    model.fusion.blocks[0].register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    images, texts = batch(cfg)
    losses = objective(model(images, texts, objective.inputs.fusion_pairs))
    losses["loss"].backward()
    text_len = texts.shape[-1]
    # pair (view 1, caption): 16 patches, half kept by the fusion input; pair (view 2, caption): 4 left by
    # the tower, half of those kept by the fusion input; one fusion call each (different lengths)
    assert sorted(lengths) == sorted([1 + 8 + text_len, 1 + 2 + text_len])
    assert torch.isfinite(losses["loss"]) and model.clip.visual.conv1.weight.grad.abs().sum() > 0


def _fusion(readout="cls", **kw):
    torch.manual_seed(0)
    fusion = FusionModule(width=16, depth=2, heads=4, mlp_ratio=2.0, readout=readout, grid_size=3, **kw)
    if fusion.token is not None:
        nn.init.normal_(fusion.token)
    return fusion


def _inputs():
    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(2, 10, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    valid = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    return image, text, valid


@pytest.mark.parametrize("readout", ["cls", "token"])
def test_single_query_last_block_equals_the_full_sequence(readout):
    fusion = _fusion(readout).eval()
    image, text, valid = _inputs()
    with torch.no_grad():
        got = fusion(image, text, valid)
        # naive reference: every block computes every position, then the readout position is taken
        x = torch.cat([image + fusion.image_pos] + [text] + ([fusion.token.expand(2, 1, -1)] if readout == "token" else []), 1)
        keys = torch.cat([torch.ones(2, 10, dtype=torch.bool), valid]
                         + ([torch.ones(2, 1, dtype=torch.bool)] if readout == "token" else []), 1)[:, None, None, :]
        for block in fusion.blocks:
            x = block(x, keys)
        expected = torch.nn.functional.normalize(fusion.ln_final(x[:, 0 if readout == "cls" else -1]), dim=-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_kept_patches_carry_their_own_grid_positions():
    fusion = _fusion().eval()
    image, text, valid = _inputs()
    perm = torch.tensor([[4, 0, 8, 2, 6, 1, 3, 5, 7], [8, 7, 6, 5, 4, 3, 2, 1, 0]])
    shuffled = torch.cat([image[:, :1], image[:, 1:].gather(1, perm[..., None].expand(-1, -1, 16))], 1)
    with torch.no_grad():
        reference = fusion(image, text, valid)
        # the CLS readout does not depend on the order of the keys when each patch keeps its position
        torch.testing.assert_close(fusion(shuffled, text, valid, perm), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(fusion(image, text, valid, torch.arange(9).expand(2, -1)), reference, rtol=0, atol=0)
        assert not torch.allclose(fusion(shuffled, text, valid), reference, atol=1e-4)  # positions in grid order: wrong


def test_fusion_input_dropout_is_training_only():
    fusion = _fusion(patch_dropout=0.6)
    lengths = []
    fusion.blocks[0].register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    image, text, valid = _inputs()
    fusion.train()(image, text, valid)
    fusion.eval()(image, text, valid)
    assert lengths == [1 + 3 + 5, 1 + 9 + 5]  # floor(9 * 0.4) = 3 patches in training


@pytest.mark.parametrize("key", ["model.view_patch_dropout", "fusion.patch_dropout"])
def test_patch_dropout_keys_are_checked(key):
    assert C.load(None, [f"{key}=0.5"]).flat()[key] == 0.5
    with pytest.raises(C.ConfigError, match=f"{key}: 1.0 would drop every patch"):
        C.load(None, [f"{key}=1"])
    with pytest.raises(C.ConfigError, match=f"{key}: -0.1 is below the minimum 0"):
        C.load(None, [f"{key}=-0.1"])


def test_view_dropout_refuses_a_tower_without_patches(fast_cfg):
    with pytest.raises(C.ConfigError, match="model.view_patch_dropout needs the CLS and patch tokens"):
        ITOModel(fast_cfg("model.name=RN50", "data.image_size=64", "model.view_patch_dropout=0.5"), with_fusion=False)

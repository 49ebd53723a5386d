"""Losses against naive per-sample loops, in one process and over a real 2-process gloo group."""
import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ito_sweeps import config as C
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives import build_objective
from ito_sweeps.objectives.contrastive import clip_loss, nt_xent
from ito_sweeps.objectives.registry import OBJECTIVES
from tests.conftest import free_port, gloo_group


def unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


# a hand-made 4x4 case: image i is closest to caption i, but not exclusively
IMAGES = unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
TEXTS = unit([[1, 0.2, 0], [0.1, 1, 0], [0, 0.3, 1], [1, 0.8, 0.1]])
SCALE = torch.tensor(3.0, dtype=torch.float64)


def naive_ce(logits_row, target):
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def naive_clip(img, txt, s):
    n = len(img)
    sim = [[s * sum(a * b for a, b in zip(img[i], txt[j])) for j in range(n)] for i in range(n)]
    i2t = sum(naive_ce(sim[i], i) for i in range(n)) / n
    t2i = sum(naive_ce([sim[j][i] for j in range(n)], i) for i in range(n)) / n
    return (i2t + t2i) / 2


def naive_nt_xent(a, b, s):
    n = len(a)
    dot = lambda x, y: s * sum(p * q for p, q in zip(x, y))  # noqa: E731

    def side(x, y):
        total = 0.0
        for i in range(n):
            row = [dot(x[i], y[j]) for j in range(n)] + [dot(x[i], x[k]) for k in range(n) if k != i]
            total += naive_ce(row, i)
        return total / n

    return (side(a, b) + side(b, a)) / 2


def test_clip_loss_matches_naive_loop_on_hand_made_case():
    got = clip_loss()(IMAGES, TEXTS, SCALE).item()
    assert got == pytest.approx(naive_clip(IMAGES.tolist(), TEXTS.tolist(), 3.0), abs=1e-12)


def test_clip_loss_perfect_alignment_known_value():
    # identical orthonormal embeddings: each row's logits are [s, 0, 0, 0] -> CE = log(1 + 3 e^-s)
    eye = torch.eye(4, dtype=torch.float64)
    got = clip_loss()(eye, eye, torch.tensor(5.0, dtype=torch.float64)).item()
    assert got == pytest.approx(math.log(1 + 3 * math.exp(-5.0)), abs=1e-12)


def test_nt_xent_matches_naive_loop_on_hand_made_case():
    got = nt_xent(IMAGES, TEXTS, SCALE).item()
    assert got == pytest.approx(naive_nt_xent(IMAGES.tolist(), TEXTS.tolist(), 3.0), abs=1e-12)


def random_features(views, captions, pairs, b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: F.normalize(torch.randn(*s, d, generator=g, dtype=torch.float64), dim=-1)  # noqa: E731
    return Features(
        image=rand(views, b), text=rand(captions, b), fused=rand(pairs, b) if pairs else None,
        logit_scale=torch.tensor(2.5, dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "alignment, views, captions, expected_pairs",
    [
        ("none", 1, 1, [(0, 0)]),
        ("views", 3, 1, [(0, 0), (1, 0), (2, 0)]),
        ("captions", 1, 2, [(0, 0), (0, 1)]),
        ("views_captions", 2, 3, [(v, c) for v in range(2) for c in range(3)]),
    ],
)
def test_ito_alignment_averages_clip_over_every_view_caption_pair(alignment, views, captions, expected_pairs):
    cfg = C.load(None, [f"objective.alignment={alignment}", "objective.num_views=3" if views == 3 else
                        "objective.num_views=2", f"objective.num_captions={captions if captions > 1 else 2}",
                        "objective.fusion_weight=0"])
    obj = build_objective(cfg)
    assert (obj.inputs.views, obj.inputs.captions, obj.inputs.fusion_pairs) == (views, captions, ())
    f = random_features(views, captions, 0)
    expected = sum(
        naive_clip(f.image[v].tolist(), f.text[c].tolist(), 2.5) for v, c in expected_pairs
    ) / len(expected_pairs)
    losses = obj(f)
    assert losses["loss"].item() == pytest.approx(expected, abs=1e-10)
    assert "loss_fusion" not in losses


@pytest.mark.parametrize(
    "alignment, views, captions, pairs",
    [
        ("views", 2, 1, ((0, 0), (1, 0))),
        ("captions", 1, 2, ((0, 0), (0, 1))),
        ("views_captions", 2, 2, ((0, 0), (1, 0))),
        ("none", 2, 1, ((0, 0), (1, 0))),  # a second view is drawn for fusion alone
    ],
)
def test_ito_total_is_align_plus_lambda_fusion(alignment, views, captions, pairs):
    cfg = C.load(None, [f"objective.alignment={alignment}", "objective.fusion_weight=1.5"])
    obj = build_objective(cfg)
    assert (obj.inputs.views, obj.inputs.captions, obj.inputs.fusion_pairs) == (views, captions, pairs)
    f = random_features(views, captions, 2, seed=1)
    losses = obj(f)
    fusion = naive_nt_xent(f.fused[0].tolist(), f.fused[1].tolist(), 2.5)
    assert losses["loss_fusion"].item() == pytest.approx(fusion, abs=1e-10)
    assert losses["loss"].item() == pytest.approx(losses["loss_align"].item() + 1.5 * fusion, abs=1e-10)
    align_pairs = [(0, 0)] if alignment == "none" else [(v, c) for v in range(views) for c in range(captions)]
    expected_align = sum(naive_clip(f.image[v].tolist(), f.text[c].tolist(), 2.5) for v, c in align_pairs)
    assert losses["loss_align"].item() == pytest.approx(expected_align / len(align_pairs), abs=1e-10)


def test_fusion_depth_zero_turns_fusion_off():
    assert build_objective(C.load(None, ["fusion.depth=0"])).inputs.fusion_pairs == ()


def test_registry_lists_every_objective_and_fusion_defaults():
    assert set(OBJECTIVES) == {"clip", "ito", "unialign", "latent_structure", "cyclip"}
    # lambda defaults to 2 for ito only: a peer objective trains as published unless fusion is asked for
    assert {name: C.load(None, [f"objective.name={name}"]).objective.fusion_weight for name in OBJECTIVES} == {
        "clip": 0.0, "ito": 2.0, "unialign": 0.0, "latent_structure": 0.0, "cyclip": 0.0}
    assert C.load(None, ["objective.name=cyclip", "objective.fusion_weight=1"]).objective.fusion_weight == 1.0


# ---- data parallel: the loss over 2 ranks equals the loss over the concatenated batch --------------

# Each objective's loss mixes terms over the global batch (gathered) with per-sample terms (local means);
# over ranks, the mean loss and the gradients both match one process holding the whole batch.
PARALLEL_CASES = {
    "ito": ["objective.alignment=views", "objective.fusion_weight=2"],
    "ito local_loss": ["objective.alignment=views", "objective.fusion_weight=2", "objective.local_loss=true"],
    "unialign": ["objective.name=unialign", "objective.unialign.centroid_weight=0.5",
                 "objective.unialign.volume_weight=1"],
    "latent_structure": ["objective.name=latent_structure", "objective.latent_structure.regularizers=[sep, br, gc]",
                         "objective.fusion_weight=1"],
    "cyclip": ["objective.name=cyclip"],
}
FIELDS = ("image", "text", "fused", "image_independent", "text_independent")


def _local_features(features, rows):
    return Features(**{k: getattr(features, k)[:, rows].clone().requires_grad_(True) for k in FIELDS},
                    logit_scale=features.logit_scale)


def _rank_main(rank, world_size, port, features, out):
    with gloo_group(rank, world_size, port):
        b = features.image.shape[1] // world_size
        for case, overrides in PARALLEL_CASES.items():
            local = _local_features(features, slice(rank * b, (rank + 1) * b))
            loss = build_objective(C.load(None, overrides))(local)["loss"]
            loss.backward()
            # plain lists: shared-memory tensors would not outlive this process
            out.put((case, rank, loss.item(), {k: getattr(local, k).grad.tolist() for k in FIELDS
                                               if getattr(local, k).grad is not None}))


def test_losses_see_the_global_batch_across_two_processes():
    world_size = 2
    full = random_features(2, 2, 2, b=8, d=6, seed=3)
    g = torch.Generator().manual_seed(4)
    full.image_independent, full.text_independent = (
        F.normalize(torch.randn(2, 8, 6, generator=g, dtype=torch.float64), dim=-1) for _ in range(2))
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.spawn(_rank_main, args=(world_size, free_port(), full, out), nprocs=world_size, join=True)
    results = [out.get() for _ in range(len(PARALLEL_CASES) * world_size)]

    for case, overrides in PARALLEL_CASES.items():
        leaf = _local_features(full, slice(None))
        single = build_objective(C.load(None, overrides))(leaf)["loss"]
        single.backward()
        ranks = [r for r in results if r[0] == case]
        # every rank's loss is the global loss except for local_loss, where each rank scores its own rows
        # and per-sample terms, which are local means: the ranks' mean is the single-process loss
        assert sum(r[2] for r in ranks) / world_size == pytest.approx(single.item(), abs=1e-10), case
        for _, rank, _, grads in ranks:
            rows = slice(rank * 4, (rank + 1) * 4)
            assert set(grads) == {k for k in FIELDS if getattr(leaf, k).grad is not None}, case
            for k, grad in grads.items():
                # The gather sums the ranks' gradients into each rank's rows, and DDP later averages
                # parameter gradients over ranks: local rows carry world_size x the single-process gradient.
                torch.testing.assert_close(torch.tensor(grad, dtype=torch.float64) / world_size,
                                           getattr(leaf, k).grad[:, rows], rtol=1e-7, atol=1e-12, msg=case + k)

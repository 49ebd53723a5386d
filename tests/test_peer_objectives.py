"""The peer objectives' loss terms (methods.md sections 3 and 4) against naive per-sample loops.

Every reference below is written from the spec's formulas with plain Python floats over nested lists,
never from the vectorised code: UniAlign's Gaussian-kernel uniformity, anchor alignment, centroid
uniformity and Gram volume; Jiang et al.'s L_con, separation, Brownian bridge and geometric
consistency; CyCLIP; and ITO's fusion term crossed with every objective.
"""
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ito_sweeps import config as C
from ito_sweeps.config import ConfigError
from ito_sweeps.models.towers import Features
from ito_sweeps.objectives import build_objective
from ito_sweeps.objectives.contrastive import info_nce, uniformity
from ito_sweeps.objectives.ito import WithFusion
from ito_sweeps.objectives.latent_structure import (
    REGULARIZERS,
    CyCLIPObjective,
    LatentStructureObjective,
    brownian_bridge,
    geometric_consistency,
    latent_contrastive,
    orthogonality,
    separation,
    symmetry_terms,
)
from ito_sweeps.objectives.registry import OBJECTIVES, Inputs
from ito_sweeps.objectives.unialign import UniAlignObjective, anchor_alignment, gaussian, gram_volume
from tests.test_objectives import naive_ce, naive_clip, naive_nt_xent, random_features

S = 2.5  # the logit scale random_features uses
SCALE = torch.tensor(S, dtype=torch.float64)


# ---- random inputs -----------------------------------------------------------------------------------


def raw(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def unit_rows(*shape, seed):
    return F.normalize(raw(*shape, seed=seed), dim=-1)


def latent_features(b=6, d=5, seed=0, pairs=0):
    """Features as latent_structure reads them: rows 0/1 are original/augmented, plus independent heads."""
    f = random_features(2, 2, pairs, b=b, d=d, seed=seed)
    return replace(f, image_independent=unit_rows(2, b, d, seed=seed + 100),
                   text_independent=unit_rows(2, b, d, seed=seed + 200))


# ---- naive references: plain floats over nested lists --------------------------------------------------


def dot(x, y):
    return sum(p * q for p, q in zip(x, y))


def sqdist(x, y):
    return sum((p - q) ** 2 for p, q in zip(x, y))


def naive_uniformity(rows, t, exclude_self=False):
    n = len(rows)
    pairs = [(i, j) for i in range(n) for j in range(n) if not (exclude_self and i == j)]
    return math.log(sum(math.exp(-t * sqdist(rows[i], rows[j])) for i, j in pairs) / len(pairs))


def naive_gaussian_uniformity(rows, tau):
    """U(Z) = log 1/B^2 sum_{i,j} exp(-||z_i - z_j||^2 / (2 tau^2)), spec section 3."""
    n = len(rows)
    total = 0.0
    for i in range(n):
        for j in range(n):
            total += math.exp(-sqdist(rows[i], rows[j]) / (2 * tau * tau))
    return math.log(total / (n * n))


def naive_wang_isola(rows):
    """log mean_{i != j} exp(-2 ||u_i - u_j||^2)."""
    n = len(rows)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += math.exp(-2 * sqdist(rows[i], rows[j]))
    return math.log(total / (n * (n - 1)))


def naive_anchor_alignment(z, a):
    """z[m][i] = modality m of sample i; 1/(B(M-1)) sum_i sum_{n != a} ||z_i^a - z_i^n||^2."""
    m_count, b = len(z), len(z[0])
    total = 0.0
    for i in range(b):
        for n in range(m_count):
            if n != a:
                total += sqdist(z[a][i], z[n][i])
    return total / (b * (m_count - 1))


def naive_det(mat):
    if len(mat) == 1:
        return mat[0][0]
    return sum((-1) ** c * mat[0][c] * naive_det([row[:c] + row[c + 1:] for row in mat[1:]])
               for c in range(len(mat)))


def naive_gram_volume(z):
    m_count, b = len(z), len(z[0])
    total = 0.0
    for i in range(b):
        gram = [[dot(z[m][i], z[n][i]) for n in range(m_count)] for m in range(m_count)]
        det = naive_det(gram)
        total += math.sqrt(det) if det > 0 else 0.0
    return total / b


def naive_centroid_uniformity(z, tau):
    m_count, b, d = len(z), len(z[0]), len(z[0][0])
    centroids = [[sum(z[m][i][k] for m in range(m_count)) / m_count for k in range(d)] for i in range(b)]
    return naive_gaussian_uniformity(centroids, tau)


def naive_info_nce(a, b, s):
    n = len(a)
    return sum(naive_ce([s * dot(a[i], b[j]) for j in range(n)], i) for i in range(n)) / n


def naive_latent_contrastive(v, t, va, ta, s):
    return (naive_info_nce(v, t, s) + naive_info_nce(t, v, s) + naive_info_nce(v, va, s)
            + naive_info_nce(t, ta, s)) / 4


def naive_orthogonality(z, zi):
    return sum(dot(z[j], zi[j]) ** 2 for j in range(len(z))) / len(z)


def naive_separation(v, t, vi, ti, vai, tai, s):
    ortho = sum(dot(v[j], vi[j]) ** 2 + dot(t[j], ti[j]) ** 2 for j in range(len(v))) / len(v)
    contrast = (naive_info_nce(vi, vai, s) + naive_info_nce(ti, tai, s)) / 2
    uniform = (naive_wang_isola(vi) + naive_wang_isola(ti)) / 2
    return ortho + contrast + uniform


def naive_bridge_point(vj, tj, bt):
    x = [bt * p + (1 - bt) * q for p, q in zip(vj, tj)]
    norm = math.sqrt(sum(c * c for c in x))
    return [c / norm for c in x]


def naive_brownian_bridge(v, t, va, bt):
    return sum(sqdist(va[j], naive_bridge_point(v[j], t[j], bt)) for j in range(len(v))) / len(v)


def naive_symmetry(v, t):
    b = len(v)
    cross = sum((dot(v[j], t[k]) - dot(v[k], t[j])) ** 2 for j in range(b) for k in range(b)) / b
    in_modal = sum((dot(v[j], v[k]) - dot(t[j], t[k])) ** 2 for j in range(b) for k in range(b)) / b
    return cross, in_modal


def naive_geometric_consistency(v, t, va, ta):
    b = len(v)
    l_gc = 0.0
    l_aug = 0.0
    for j in range(b):
        for k in range(b):
            l_gc += (dot(v[j], t[k]) - dot(v[k], t[j])) ** 2 + (dot(v[j], v[k]) - dot(t[j], t[k])) ** 2
            l_aug += (dot(v[j], v[k]) - dot(va[j], va[k])) ** 2 + (dot(t[j], t[k]) - dot(ta[j], ta[k])) ** 2
    paired = sum((dot(v[j], t[j]) - dot(va[j], ta[j])) ** 2 for j in range(b))
    return l_gc / b + l_aug / b + paired / b


def lists(*tensors):
    return [x.tolist() for x in tensors]


# ---- 1. every term against its naive loop ------------------------------------------------------------


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("t", [2.0, 0.7])
def test_uniformity_matches_naive_loop_on_non_unit_rows(t, exclude_self):
    z = 1.7 * raw(6, 5, seed=1)  # not unit vectors: UniAlign's centroids are not
    got = uniformity(z, t, exclude_self=exclude_self).item()
    assert got == pytest.approx(naive_uniformity(z.tolist(), t, exclude_self), abs=1e-10)


def test_wang_isola_uniformity_is_t2_without_self_pairs():
    z = unit_rows(7, 4, seed=2)
    assert uniformity(z, 2.0, exclude_self=True).item() == pytest.approx(naive_wang_isola(z.tolist()), abs=1e-10)


@pytest.mark.parametrize("tau", [0.5, 0.3, 1.2])
def test_gaussian_kernel_uniformity_matches_spec_formula(tau):
    assert gaussian(tau) == pytest.approx(1 / (2 * tau**2), rel=1e-15)
    z = unit_rows(6, 5, seed=3)
    got = uniformity(z, gaussian(tau)).item()
    assert got == pytest.approx(naive_gaussian_uniformity(z.tolist(), tau), abs=1e-10)


@pytest.mark.parametrize("m, anchor", [(2, 0), (2, 1), (3, 0), (3, 2), (4, 1)])
def test_anchor_alignment_matches_naive_loop(m, anchor):
    z = unit_rows(m, 6, 5, seed=4)
    got = anchor_alignment(z, anchor).item()
    assert got == pytest.approx(naive_anchor_alignment(z.tolist(), anchor), abs=1e-10)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_gram_volume_matches_naive_loop(m):
    z = unit_rows(m, 6, 5, seed=5)
    assert gram_volume(z).item() == pytest.approx(naive_gram_volume(z.tolist()), abs=1e-10)


def test_info_nce_matches_naive_loop():
    a, b = unit_rows(6, 5, seed=6), unit_rows(6, 5, seed=7)
    assert info_nce(a, b, SCALE).item() == pytest.approx(naive_info_nce(*lists(a, b), S), abs=1e-10)
    # one direction only: swapping the arguments is the other direction, in general different
    assert info_nce(b, a, SCALE).item() == pytest.approx(naive_info_nce(*lists(b, a), S), abs=1e-10)


def test_latent_contrastive_matches_naive_loop():
    v, t, va, ta = unit_rows(4, 6, 5, seed=8)
    got = latent_contrastive(v, t, va, ta, SCALE).item()
    assert got == pytest.approx(naive_latent_contrastive(*lists(v, t, va, ta), S), abs=1e-10)


def test_orthogonality_matches_naive_loop():
    z, zi = unit_rows(2, 6, 5, seed=9)
    assert orthogonality(z, zi).item() == pytest.approx(naive_orthogonality(*lists(z, zi)), abs=1e-10)


def test_separation_matches_naive_loop():
    v, t, vi, ti, vai, tai = unit_rows(6, 6, 5, seed=10)
    got = separation(v, t, vi, ti, vai, tai, SCALE).item()
    assert got == pytest.approx(naive_separation(*lists(v, t, vi, ti, vai, tai), S), abs=1e-10)


@pytest.mark.parametrize("bridge_t", [0.25, 0.6])
def test_brownian_bridge_matches_naive_loop(bridge_t):
    v, t, va = unit_rows(3, 6, 5, seed=11)
    got = brownian_bridge(v, t, va, bridge_t).item()
    assert got == pytest.approx(naive_brownian_bridge(*lists(v, t, va), bridge_t), abs=1e-10)


def test_symmetry_terms_match_naive_loop():
    v, t = unit_rows(2, 6, 5, seed=12)
    cross, in_modal = symmetry_terms(v, t)
    expected_cross, expected_in_modal = naive_symmetry(*lists(v, t))
    assert cross.item() == pytest.approx(expected_cross, abs=1e-10)
    assert in_modal.item() == pytest.approx(expected_in_modal, abs=1e-10)
    assert expected_cross > 1e-3 and expected_in_modal > 1e-3  # a generic case, not a trivial zero


def test_geometric_consistency_matches_naive_loop():
    v, t, va, ta = unit_rows(4, 6, 5, seed=13)
    got = geometric_consistency(v, t, va, ta).item()
    assert got == pytest.approx(naive_geometric_consistency(*lists(v, t, va, ta)), abs=1e-10)


# ---- 2. gradients: gradcheck through F.normalize of raw inputs ------------------------------------------


def leaves(n, *shape, seed):
    return tuple(raw(*shape, seed=seed + k).requires_grad_(True) for k in range(n))


def norm(*xs):
    return tuple(F.normalize(x, dim=-1) for x in xs)


# fast mode (random directional derivatives) keeps the file fast: F.cross_entropy is costly on small CPUs
GRADCHECK = dict(eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize(
    "name, n_inputs, fn",
    [
        ("uniformity", 1, lambda z: uniformity(z, 0.8)),
        ("uniformity_exclude_self", 1, lambda z: uniformity(z, 2.0, exclude_self=True)),
        ("gaussian_uniformity", 1, lambda z: uniformity(*norm(z), gaussian(0.4))),
        ("anchor_alignment_0", 3, lambda a, b, c: anchor_alignment(torch.stack(norm(a, b, c)), 0)),
        ("anchor_alignment_2", 3, lambda a, b, c: anchor_alignment(torch.stack(norm(a, b, c)), 2)),
        ("gram_volume_2", 2, lambda a, b: gram_volume(torch.stack(norm(a, b)))),
        ("gram_volume_3", 3, lambda a, b, c: gram_volume(torch.stack(norm(a, b, c)))),
        ("info_nce", 2, lambda a, b: info_nce(*norm(a, b), SCALE)),
        ("latent_contrastive", 4, lambda *x: latent_contrastive(*norm(*x), SCALE)),
        ("orthogonality", 2, lambda a, b: orthogonality(*norm(a, b))),
        ("separation", 6, lambda *x: separation(*norm(*x), SCALE)),
        ("brownian_bridge", 3, lambda *x: brownian_bridge(*norm(*x), 0.25)),
        ("symmetry_cross", 2, lambda a, b: symmetry_terms(*norm(a, b))[0]),
        ("symmetry_inmodal", 2, lambda a, b: symmetry_terms(*norm(a, b))[1]),
        ("geometric_consistency", 4, lambda *x: geometric_consistency(*norm(*x))),
    ],
)
def test_gradcheck(name, n_inputs, fn):
    inputs = leaves(n_inputs, 4, 3, seed=20)  # random, so gram_volume's vectors are not collinear
    assert torch.autograd.gradcheck(fn, inputs, **GRADCHECK)


def test_gradcheck_info_nce_scale():
    a, b = unit_rows(2, 4, 3, seed=30)
    s = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: info_nce(a, b, s), (s,), **GRADCHECK)


def test_gradcheck_unialign_objective_with_centroid_and_volume():
    cfg = C.load(None, ["objective.name=unialign", "objective.alignment=views",
                        "objective.unialign.centroid_weight=0.6", "objective.unialign.centroid_tau=0.4",
                        "objective.unialign.volume_weight=0.9"])
    obj = build_objective(cfg)
    image, text = raw(2, 4, 3, seed=31).requires_grad_(True), raw(1, 4, 3, seed=32).requires_grad_(True)

    def loss(image, text, key):
        f = Features(image=F.normalize(image, dim=-1), text=F.normalize(text, dim=-1), fused=None, logit_scale=SCALE)
        return obj(f)[key]

    for key in ("loss", "loss_centroid", "loss_volume"):
        assert torch.autograd.gradcheck(lambda i, t: loss(i, t, key), (image, text), **GRADCHECK)


# ---- 3. special cases with known answers ------------------------------------------------------------


@pytest.mark.parametrize("bridge_t", [0.25, 0.7])
def test_brownian_bridge_is_zero_on_the_bridge(bridge_t):
    v, t = unit_rows(2, 6, 5, seed=40)
    mu = torch.tensor([naive_bridge_point(vj, tj, bridge_t) for vj, tj in zip(*lists(v, t))], dtype=torch.float64)
    assert brownian_bridge(v, t, mu, bridge_t).item() == pytest.approx(0.0, abs=1e-12)
    # and the point on the bridge is t of the way from the text to the image (t = 1 is the image itself)
    assert brownian_bridge(v, t, v, 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_geometric_consistency_identical_modalities():
    v, va = unit_rows(2, 6, 5, seed=41)
    # v == t and v_aug == t_aug: both symmetry terms and the paired term vanish ...
    assert [x.item() for x in symmetry_terms(v, v)] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert symmetry_terms(va, va)[0].item() == pytest.approx(0.0, abs=1e-12)
    # ... so what is left is the in-modal augmentation term, 2/B sum_{j,k} (<v_j,v_k> - <va_j,va_k>)^2
    vl, val = lists(v, va)
    b = len(vl)
    in_modal = sum((dot(vl[j], vl[k]) - dot(val[j], val[k])) ** 2 for j in range(b) for k in range(b))
    assert geometric_consistency(v, v, va, va).item() == pytest.approx(2 * in_modal / b, abs=1e-10)
    # all four identical: exactly 0
    assert geometric_consistency(v, v, v, v).item() == pytest.approx(0.0, abs=1e-12)
    # v == t and the augmented pair a rotation of it: every similarity is kept, so 0 too
    q, _ = torch.linalg.qr(raw(5, 5, seed=42))
    vr = v @ q
    assert geometric_consistency(v, v, vr, vr).item() == pytest.approx(0.0, abs=1e-10)


def test_anchor_alignment_is_zero_when_modalities_coincide():
    z = unit_rows(6, 5, seed=43)
    for anchor in (0, 2):
        assert anchor_alignment(torch.stack([z, z, z]), anchor).item() == pytest.approx(0.0, abs=1e-15)
    cfg = C.load(None, ["objective.name=unialign", "objective.alignment=views_captions", "objective.num_views=2",
                        "objective.num_captions=2", "objective.unialign.anchor=text"])
    f = Features(image=torch.stack([z, z]), text=torch.stack([z, z]), fused=None, logit_scale=SCALE)
    losses = build_objective(cfg)(f)
    assert losses["loss_align"].item() == pytest.approx(0.0, abs=1e-15)
    # four copies of one modality: the uniformity is four times its own
    assert losses["loss_uniformity"].item() == pytest.approx(4 * naive_gaussian_uniformity(z.tolist(), 0.5), abs=1e-10)


@pytest.mark.parametrize("factor", [-1.0, 2.0])
def test_gram_volume_is_zero_for_collinear_vectors_with_finite_gradient(factor):
    x = raw(5, 4, seed=44).requires_grad_(True)
    z = F.normalize(x, dim=-1)
    vol = gram_volume(torch.stack([z, factor * z]))  # z and -z (both unit), or z and 2z
    assert not torch.isnan(vol) and vol.item() == pytest.approx(0.0, abs=1e-12)
    vol.backward()
    assert torch.isfinite(x.grad).all()
    # M = 3 with the third vector collinear with the first: still 0, no NaN, finite gradient
    x.grad = None
    z = F.normalize(x, dim=-1)
    other = F.normalize(raw(5, 4, seed=45), dim=-1)
    vol3 = gram_volume(torch.stack([z, other, factor * z]))
    assert not torch.isnan(vol3) and vol3.item() == pytest.approx(0.0, abs=1e-7)
    vol3.backward()
    assert torch.isfinite(x.grad).all()


def test_gram_volume_hand_worked_values():
    thetas = [0.3, 1.0, math.pi / 2, 2.5, 3.0]
    a = torch.tensor([[1.0, 0.0, 0.0]] * len(thetas), dtype=torch.float64)
    b = torch.tensor([[math.cos(th), math.sin(th), 0.0] for th in thetas], dtype=torch.float64)
    for i, th in enumerate(thetas):
        one = gram_volume(torch.stack([a[i:i + 1], b[i:i + 1]])).item()
        assert one == pytest.approx(abs(math.sin(th)), abs=1e-12)
    mean = gram_volume(torch.stack([a, b])).item()
    assert mean == pytest.approx(sum(abs(math.sin(th)) for th in thetas) / len(thetas), abs=1e-12)
    # three orthonormal vectors span the unit cube: volume 1
    eye = torch.eye(3, dtype=torch.float64)[:, None, :]
    assert gram_volume(eye).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("t", [2.0, 0.3])
def test_uniformity_of_identical_rows_is_log_one(t):
    z = unit_rows(1, 5, seed=47).expand(6, 5)
    assert uniformity(z, t).item() == pytest.approx(0.0, abs=1e-12)


# ---- 4. objectives: loss dicts against naive totals --------------------------------------------------


UNIALIGN_WEIGHTS = ["objective.unialign.uniformity_weight=0.7", "objective.unialign.uniformity_tau=0.8",
                    "objective.unialign.align_weight=1.3", "objective.unialign.centroid_weight=0.6",
                    "objective.unialign.centroid_tau=0.4", "objective.unialign.volume_weight=0.9"]


@pytest.mark.parametrize(
    "alignment, views, captions, anchor, anchor_index",
    [
        ("none", 1, 1, "image", 0),
        ("none", 1, 1, "text", 1),
        ("views", 3, 1, "image", 0),
        ("views", 3, 1, "text", 3),
        ("captions", 1, 3, "text", 1),
        ("views_captions", 2, 2, "image", 0),
        ("views_captions", 2, 2, "text", 2),
    ],
)
def test_unialign_objective_matches_naive_total(alignment, views, captions, anchor, anchor_index):
    cfg = C.load(None, ["objective.name=unialign", f"objective.alignment={alignment}", "objective.num_views=3" if
                        views == 3 else "objective.num_views=2", f"objective.num_captions={max(captions, 2)}",
                        f"objective.unialign.anchor={anchor}", *UNIALIGN_WEIGHTS])
    obj = build_objective(cfg)
    assert isinstance(obj, UniAlignObjective)
    assert obj.inputs == Inputs(views=views, captions=captions)
    # the features carry one extra view and caption, which UniAlign must not read
    f = random_features(views + 1, captions + 1, 0, b=6, d=5, seed=50)
    z = f.image[:views].tolist() + f.text[:captions].tolist()  # modalities: views, then captions
    expected = {
        "loss_uniformity": sum(naive_gaussian_uniformity(zm, 0.8) for zm in z),
        "loss_align": naive_anchor_alignment(z, anchor_index),
        "loss_centroid": naive_centroid_uniformity(z, 0.4),
        "loss_volume": naive_gram_volume(z),
    }
    expected["loss"] = (0.7 * expected["loss_uniformity"] + 1.3 * expected["loss_align"]
                        + 0.6 * expected["loss_centroid"] + 0.9 * expected["loss_volume"])
    losses = obj(f)
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, abs=1e-10), key


def test_unialign_defaults_leave_out_centroid_and_volume():
    obj = build_objective(C.load(None, ["objective.name=unialign"]))
    assert obj.inputs == Inputs(views=2, captions=1)  # the default alignment is `views`, 2 views
    f = random_features(2, 1, 0, seed=51)
    z = f.image.tolist() + f.text.tolist()
    losses = obj(f)
    assert set(losses) == {"loss", "loss_uniformity", "loss_align"}
    uni = sum(naive_gaussian_uniformity(zm, 0.5) for zm in z)
    align = naive_anchor_alignment(z, 0)
    assert losses["loss"].item() == pytest.approx(uni + align, abs=1e-10)


@pytest.mark.parametrize("only", ["centroid", "volume"])
def test_unialign_tuple_terms_appear_only_with_their_weight(only):
    cfg = C.load(None, ["objective.name=unialign", f"objective.unialign.{only}_weight=0.5"])
    assert set(build_objective(cfg)(random_features(2, 1, 0, seed=52))) == {
        "loss", "loss_uniformity", "loss_align", f"loss_{only}"}


def naive_latent_terms(f, bridge_t):
    v, va = f.image[0].tolist(), f.image[1].tolist()
    t, ta = f.text[0].tolist(), f.text[1].tolist()
    vi, vai = f.image_independent[0].tolist(), f.image_independent[1].tolist()
    ti, tai = f.text_independent[0].tolist(), f.text_independent[1].tolist()
    return {
        "loss_con": naive_latent_contrastive(v, t, va, ta, S),
        "loss_sep": naive_separation(v, t, vi, ti, vai, tai, S),
        "loss_br": naive_brownian_bridge(v, t, va, bridge_t),
        "loss_gc": naive_geometric_consistency(v, t, va, ta),
    }


@pytest.mark.parametrize(
    "regularizers, weights, bridge_t",
    [
        ([], {}, 0.25),
        (["sep"], {"sep": 0.7}, 0.25),
        (["br"], {"br": 1.9}, 0.25),
        (["br"], {"br": 0.5}, 0.6),
        (["gc"], {"gc": 0.3}, 0.25),
        (["sep", "br", "gc"], {"sep": 0.7, "br": 1.9, "gc": 0.3}, 0.4),
        (["gc", "sep"], {}, 0.25),  # default weights, 1 each
    ],
)
def test_latent_structure_objective_matches_naive_total(regularizers, weights, bridge_t):
    overrides = ["objective.name=latent_structure",
                 f"objective.latent_structure.regularizers=[{', '.join(regularizers)}]",
                 f"objective.latent_structure.bridge_t={bridge_t}"]
    overrides += [f"objective.latent_structure.{r}_weight={w}" for r, w in weights.items()]
    obj = build_objective(C.load(None, overrides))
    assert isinstance(obj, LatentStructureObjective)
    assert obj.inputs == Inputs(views=2, captions=1, augmented_captions=1, independent_heads="sep" in regularizers)
    f = latent_features(seed=53)
    terms = naive_latent_terms(f, bridge_t)
    expected = {"loss_con": terms["loss_con"], **{f"loss_{r}": terms[f"loss_{r}"] for r in regularizers}}
    expected["loss"] = terms["loss_con"] + sum(weights.get(r, 1.0) * terms[f"loss_{r}"] for r in regularizers)
    losses = obj(f)
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, abs=1e-10), key


def test_latent_structure_without_sep_needs_no_independent_features():
    obj = build_objective(C.load(None, ["objective.name=latent_structure",
                                        "objective.latent_structure.regularizers=[br, gc]"]))
    f = random_features(2, 2, 0, seed=54)  # no independent heads
    terms = naive_latent_terms(latent_features(seed=54), 0.25)  # same z rows: the seed draws them first
    assert obj(f)["loss"].item() == pytest.approx(terms["loss_con"] + terms["loss_br"] + terms["loss_gc"], abs=1e-10)


def test_regularizer_table_names():
    assert set(REGULARIZERS) == {"sep", "br", "gc"}


@pytest.mark.parametrize("weights", [{}, {"cross": 0.8, "inmodal": 1.7}])
def test_cyclip_objective_matches_naive_total(weights):
    overrides = ["objective.name=cyclip"] + [f"objective.cyclip.{k}_weight={w}" for k, w in weights.items()]
    obj = build_objective(C.load(None, overrides))
    assert isinstance(obj, CyCLIPObjective)
    assert obj.inputs == Inputs()
    f = random_features(1, 1, 0, seed=55)
    v, t = f.image[0].tolist(), f.text[0].tolist()
    clip = naive_clip(v, t, S)
    cross, in_modal = naive_symmetry(v, t)
    cw, iw = weights.get("cross", 0.25), weights.get("inmodal", 0.25)
    expected = {"loss": clip + cw * cross + iw * in_modal, "loss_clip": clip, "loss_cross": cross,
                "loss_inmodal": in_modal}
    losses = obj(f)
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, abs=1e-10), key


@pytest.mark.parametrize("name, weight", [("clip", 0.0), ("ito", 2.0), ("unialign", 0.0),
                                          ("latent_structure", 0.0), ("cyclip", 0.0)])
def test_default_fusion_weight(name, weight):
    cfg = C.load(None, [f"objective.name={name}"])
    assert cfg.objective.fusion_weight == weight
    assert isinstance(build_objective(cfg), WithFusion) == (weight > 0)
    assert (build_objective(cfg).inputs.fusion_pairs != ()) == (weight > 0)


FUSION_CASES = {
    "clip": [],
    "ito": [],
    "unialign": ["objective.unialign.centroid_weight=0.6", "objective.unialign.volume_weight=0.9"],
    "latent_structure": ["objective.latent_structure.regularizers=[sep, br, gc]"],
    "cyclip": [],
}


@pytest.mark.parametrize("name", sorted(FUSION_CASES))
def test_fusion_term_crosses_every_objective(name):
    common = [f"objective.name={name}", *FUSION_CASES[name]]
    base = build_objective(C.load(None, common + ["objective.fusion_weight=0"]))
    fused = build_objective(C.load(None, common + ["objective.fusion_weight=1.5"]))
    assert not isinstance(base, WithFusion) and isinstance(fused, WithFusion)
    assert fused.inputs.fusion_pairs == ((0, 0), (1, 0))
    assert fused.inputs == replace(base.inputs, views=max(base.inputs.views, 2), fusion_pairs=((0, 0), (1, 0)))
    assert fused.inputs.views >= 2
    f = latent_features(seed=56, pairs=2)
    base_losses, losses = base(f), fused(f)
    fusion = naive_nt_xent(f.fused[0].tolist(), f.fused[1].tolist(), S)
    assert set(losses) == set(base_losses) | {"loss_fusion"}
    assert losses["loss_fusion"].item() == pytest.approx(fusion, abs=1e-10)
    assert losses["loss"].item() == pytest.approx(base_losses["loss"].item() + 1.5 * fusion, abs=1e-10)
    for key in base_losses:
        if key != "loss":
            assert losses[key].item() == pytest.approx(base_losses[key].item(), abs=1e-12), key


def test_fusion_depth_zero_keeps_any_objective_unwrapped():
    cfg = C.load(None, ["objective.name=unialign", "objective.fusion_weight=1.5", "fusion.depth=0"])
    assert not isinstance(build_objective(cfg), WithFusion)


# ---- 5. configuration errors name the valid choices ---------------------------------------------------


def test_unknown_objective_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        C.load(None, ["objective.name=unialgin"])
    message = str(err.value)
    assert "unialgin" in message
    for name in ("clip", "ito", "unialign", "latent_structure", "cyclip"):
        assert name in message
    assert set(OBJECTIVES) >= {"clip", "ito", "unialign", "latent_structure", "cyclip"}


@pytest.mark.parametrize("regularizers", ["[sepp]", "[sep, bridge]"])
def test_unknown_regularizer_lists_valid_names(regularizers):
    with pytest.raises(ConfigError) as err:
        C.load(None, ["objective.name=latent_structure", f"objective.latent_structure.regularizers={regularizers}"])
    message = str(err.value)
    assert "regularizers" in message
    for name in ("sep", "br", "gc"):
        assert name in message


# ---- 6. every objectives module imports on its own -----------------------------------------------------


IMPORT_FIRST = """
import importlib, sys
prefix = "ito_sweeps.objectives"
for module in ["registry", "contrastive", "clip", "ito", "unialign", "latent_structure"]:
    for name in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[name]
    importlib.import_module(f"{prefix}.{module}")
    registry = importlib.import_module(f"{prefix}.registry")
    assert set(registry.OBJECTIVES) == {"clip", "ito", "unialign", "latent_structure", "cyclip"}, module
"""


def test_each_objectives_module_imports_first():
    """A script that imports, say, ito_sweeps.objectives.unialign before the registry must work.

    In a fresh interpreter (one for all modules: torch and open_clip stay loaded, the package's own
    modules are dropped before each import), so this process's modules stay untouched.
    """
    done = subprocess.run([sys.executable, "-c", IMPORT_FIRST], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

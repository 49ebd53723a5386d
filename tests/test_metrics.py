"""Evaluation metrics against answers worked out by hand or by naive reference loops."""
from __future__ import annotations

import math

import pytest
import torch

from ito_sweeps.evaluate import geometry, retrieval
from ito_sweeps.evaluate.geometry import geometry_metrics, uniformity
from ito_sweeps.evaluate.probe import linear_probe_top1
from ito_sweeps.evaluate.retrieval import retrieval_metrics
from ito_sweeps.evaluate.zeroshot import class_embeddings, zeroshot_top1


def basis(n: int, i: int, dim: int = 3) -> torch.Tensor:
    """n copies of the i-th standard basis vector of R^dim."""
    return torch.eye(dim)[i].repeat(n, 1)


# --- geometry ----------------------------------------------------------------------------------


def test_geometry_keys():
    metrics = geometry_metrics(torch.randn(5, 4), torch.randn(5, 4))
    assert set(metrics) == {
        "modality_gap",
        "mean_paired_distance",
        "alignment",
        "uniformity_image",
        "uniformity_text",
        "uniformity_union",
    }


def test_orthogonal_collapsed_modalities():
    # Every image at e1, every text at e2: the two clouds are single points sqrt(2) apart.
    n = 4
    metrics = geometry_metrics(basis(n, 0), basis(n, 1))
    assert metrics["modality_gap"] == pytest.approx(math.sqrt(2), abs=1e-12)
    assert metrics["mean_paired_distance"] == pytest.approx(math.sqrt(2), abs=1e-12)
    assert metrics["alignment"] == pytest.approx(2.0, abs=1e-12)
    # A collapsed cloud: every pair at distance 0, log mean exp(0) = 0.
    assert metrics["uniformity_image"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["uniformity_text"] == pytest.approx(0.0, abs=1e-12)
    # Union of 2n points: 2 n (n - 1) ordered same-cloud pairs at distance 0 (kernel 1) and
    # 2 n^2 cross pairs at squared distance 2 (kernel exp(-4)), out of 2n (2n - 1) pairs.
    expected_union = math.log((2 * n * (n - 1) + 2 * n * n * math.exp(-4)) / (2 * n * (2 * n - 1)))
    assert metrics["uniformity_union"] == pytest.approx(expected_union, abs=1e-12)


def test_identical_embeddings_have_no_gap():
    x = torch.randn(10, 6)
    metrics = geometry_metrics(x, x.clone())
    assert metrics["modality_gap"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["mean_paired_distance"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["uniformity_image"] == metrics["uniformity_text"]


def test_mirrored_clouds_have_known_gap():
    # Images at angles +-a, texts their mirror images across the y axis: the centroids are
    # (cos a, 0) and (-cos a, 0), and each pair differs by (2 cos a, 0). With a = 60 deg all three
    # distances are 1.
    a = math.pi / 3
    image = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(a), -math.sin(a)]], dtype=torch.float64)
    text = torch.tensor([[-math.cos(a), math.sin(a)], [-math.cos(a), -math.sin(a)]], dtype=torch.float64)
    metrics = geometry_metrics(image, text)
    assert metrics["modality_gap"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["mean_paired_distance"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["alignment"] == pytest.approx(1.0, abs=1e-12)


def test_geometry_normalises_its_inputs():
    image, text = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    unit = geometry_metrics(image, text)
    scaled = geometry_metrics(7.0 * image, 0.1 * text)
    for key, value in unit.items():
        assert scaled[key] == pytest.approx(value, abs=1e-12), key


def test_uniformity_of_antipodal_points():
    # Squared distance 4: log exp(-2 * 4) = -8.
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0, abs=1e-12)


def test_uniformity_of_triangle():
    # Three unit vectors 120 deg apart: every squared chord is 2 - 2 cos(120 deg) = 3.
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert uniformity(points) == pytest.approx(-6.0, abs=1e-12)


def naive_uniformity(u: torch.Tensor) -> float:
    u = u.to(torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    total, count = 0.0, 0
    for i in range(len(u)):
        for j in range(len(u)):
            if i != j:
                total += math.exp(-2 * float(((u[i] - u[j]) ** 2).sum()))
                count += 1
    return math.log(total / count)


@pytest.mark.parametrize("block_rows", [1024, 7])
def test_uniformity_matches_naive_double_loop(monkeypatch, block_rows):
    # block_rows = 7 forces several blocks, including a ragged last one, on the 2 x 25 points.
    monkeypatch.setattr(geometry, "_UNIFORMITY_BLOCK_ROWS", block_rows)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(25, 5, generator=generator)
    text = torch.randn(25, 5, generator=generator) + 0.5
    metrics = geometry_metrics(image, text)
    assert metrics["uniformity_image"] == pytest.approx(naive_uniformity(image), abs=1e-9)
    assert metrics["uniformity_text"] == pytest.approx(naive_uniformity(text), abs=1e-9)
    assert metrics["uniformity_union"] == pytest.approx(naive_uniformity(torch.cat([image, text])), abs=1e-9)


def test_uniformity_needs_two_points():
    with pytest.raises(ValueError):
        uniformity(torch.randn(1, 3))


# --- retrieval ---------------------------------------------------------------------------------

# 3 images at e1, e2, e3 and 6 captions, two per image. Cosine scores (rows: captions):
#                        img0   img1   img2   own   t2i rank (strictly higher images)
#   c0 = e1             1      0      0      0     0
#   c1 = e2             0      1      0      0     1  (img1)
#   c2 = e3             0      0      1      1     1  (img2)
#   c3 = (e1 + e2)/√2   .71    .71    0      1     0  (img0 ties, counts in favour)
#   c4 = e1             1      0      0      2     1  (img0)
#   c5 = -e3            0      0     -1      2     2  (img0, img1)
# Image -> text, best own caption and the texts strictly above it:
#   img0: best c0 = 1, nothing above (c4 ties)            -> rank 0
#   img1: best c3 = .71, c1 = 1 above                     -> rank 1
#   img2: best c4 = 0, c2 = 1 above (c0, c1, c3 tie)      -> rank 1
HAND_IMAGES = torch.eye(3)
HAND_TEXTS = torch.tensor(
    [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 0, -1]],
)
HAND_TEXT_TO_IMAGE = torch.tensor([0, 0, 1, 1, 2, 2])


def test_retrieval_hand_made_case():
    metrics = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_TEXT_TO_IMAGE, ks=(1, 2, 5))
    assert metrics == pytest.approx(
        {
            "i2t_r1": 1 / 3,
            "i2t_r2": 1.0,
            "i2t_r5": 1.0,
            "t2i_r1": 2 / 6,
            "t2i_r2": 5 / 6,
            "t2i_r5": 1.0,
        }
    )


def test_retrieval_default_keys():
    metrics = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_TEXT_TO_IMAGE)
    assert list(metrics) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


def test_retrieval_ties_count_in_favour():
    # Every score equal: no candidate is strictly higher, so every query is a hit at k = 1.
    metrics = retrieval_metrics(torch.ones(4, 3), torch.ones(8, 3), torch.arange(8) % 4)
    assert all(value == 1.0 for value in metrics.values())


def naive_recalls(image, text, text_to_image, ks):
    image = image / image.norm(dim=1, keepdim=True)
    text = text / text.norm(dim=1, keepdim=True)
    scores = (image.double() @ text.double().T).tolist()
    owner = text_to_image.tolist()
    n, m = len(scores), len(owner)

    def rank(values, target):
        return sum(1 for v in values if v > values[target])

    recalls = {}
    for k in ks:
        hits = 0
        for i in range(n):
            if any(rank(scores[i], j) < k for j in range(m) if owner[j] == i):
                hits += 1
        recalls[f"i2t_r{k}"] = hits / n
    for k in ks:
        hits = 0
        for j in range(m):
            column = [scores[i][j] for i in range(n)]
            if rank(column, owner[j]) < k:
                hits += 1
        recalls[f"t2i_r{k}"] = hits / m
    return recalls


@pytest.mark.parametrize("query_block", [1024, 3])
def test_retrieval_matches_naive_loop(monkeypatch, query_block):
    monkeypatch.setattr(retrieval, "_QUERY_BLOCK", query_block)
    generator = torch.Generator().manual_seed(1)
    n_images, captions_per_image, dim = 20, 3, 4
    image = torch.randn(n_images, dim, generator=generator)
    # Noisy captions of their image, low dimension: ranks spread over 0 .. beyond 10.
    text_to_image = torch.arange(n_images).repeat_interleave(captions_per_image)
    text = image[text_to_image] + 1.5 * torch.randn(len(text_to_image), dim, generator=generator)
    ks = (1, 5, 10)
    expected = naive_recalls(image, text, text_to_image, ks)
    assert 0 < expected["i2t_r1"] < 1 and 0 < expected["t2i_r5"] < 1  # the case is not trivial
    assert retrieval_metrics(image, text, text_to_image, ks) == pytest.approx(expected, abs=1e-12)


def test_retrieval_rejects_image_without_caption():
    with pytest.raises(ValueError):
        retrieval_metrics(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))


# --- zero-shot ---------------------------------------------------------------------------------


def test_class_embeddings_average_normalised_prompts():
    prompt_vectors = {
        "a cat": [3.0, 0.0, 0.0],  # deliberately not unit-norm
        "the cat": [0.0, 1.0, 0.0],
        "a dog": [0.0, 0.0, 1.0],
        "the dog": [0.0, 0.0, 5.0],
    }
    calls = []

    class FakeModel:  # what open_clip's builder needs of a model
        def encode_text(self, tokens, normalize=False):
            prompts = [vocabulary[int(t)] for t in tokens]
            calls.append(prompts)
            x = torch.tensor([prompt_vectors[p] for p in prompts])
            return torch.nn.functional.normalize(x, dim=-1) if normalize else x

    vocabulary = list(prompt_vectors)
    tokenizer = lambda prompts: torch.tensor([vocabulary.index(p) for p in prompts])  # noqa: E731
    classes = class_embeddings(FakeModel(), tokenizer, ["cat", "dog"], ["a {}", "the {}"], torch.device("cpu"))
    assert calls == [["a cat", "the cat", "a dog", "the dog"]]
    # cat: mean of e1 and e2 (each normalised first) = (.5, .5, 0), re-normalised to (1, 1, 0)/√2;
    # averaging the raw vectors would have given a direction tilted towards e1.
    s = 1 / math.sqrt(2)
    assert torch.allclose(classes, torch.tensor([[s, s, 0.0], [0.0, 0.0, 1.0]]), atol=1e-7)
    assert torch.allclose(classes.norm(dim=1), torch.ones(2), atol=1e-7)


def test_zeroshot_top1_known_predictions():
    s = 1 / math.sqrt(2)
    classes = torch.tensor([[s, s, 0.0], [0.0, 0.0, 1.0]])
    # (1, .5, 0) is closest to class 0, (0, .1, 2) to class 1, (1, 0, .9) to class 1
    # (cosines .95 vs 0, .04 vs 1.0, .53 vs .67).
    image = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.1, 2.0], [1.0, 0.0, 0.9]])
    assert zeroshot_top1(image, classes, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    assert zeroshot_top1(image, classes, torch.tensor([0, 1, 1])) == pytest.approx(1.0)


def test_zeroshot_uses_cosine_not_dot_product():
    # Dot products 10 vs 2 favour class 0; cosines 1/√5 vs 2/√5 favour class 1.
    classes = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    assert zeroshot_top1(torch.tensor([[1.0, 2.0]]), classes, torch.tensor([1])) == 1.0


# --- linear probe ------------------------------------------------------------------------------


def test_linear_probe_separable_blobs():
    generator = torch.Generator().manual_seed(2)
    n_classes, dim = 10, 128
    centres = 4.0 * torch.randn(n_classes, dim, generator=generator)

    def blobs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(n_classes, (n,), generator=generator)
        return centres[labels] + torch.randn(n, dim, generator=generator), labels

    # The size the probe is meant to handle quickly: 2,000 x 128 train features.
    train_x, train_y = blobs(2000)
    test_x, test_y = blobs(500)
    assert linear_probe_top1(train_x, train_y, test_x, test_y, C=1.0, max_iter=1000, seed=0) > 0.95


def test_linear_probe_random_labels_is_chance():
    generator = torch.Generator().manual_seed(3)
    train_x, test_x = torch.randn(1000, 32, generator=generator), torch.randn(2000, 32, generator=generator)
    train_y, test_y = torch.randint(4, (1000,), generator=generator), torch.randint(4, (2000,), generator=generator)
    accuracy = linear_probe_top1(train_x, train_y, test_x, test_y, C=1.0, max_iter=1000, seed=0)
    assert 0.25 - 0.05 < accuracy < 0.25 + 0.05


def test_linear_probe_rejects_single_class():
    with pytest.raises(ValueError, match="single class"):
        linear_probe_top1(
            torch.randn(10, 4), torch.zeros(10, dtype=torch.long), torch.randn(5, 4), torch.zeros(5, dtype=torch.long),
            C=1.0, max_iter=100, seed=0,
        )

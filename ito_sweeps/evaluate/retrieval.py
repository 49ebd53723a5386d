"""Cross-modal retrieval recall@k when every image may have several captions.

Scores are cosine similarities between L2-normalised embeddings. Following the usual
Flickr30k / COCO protocol:

- image -> text: a query image scores a hit at k if ANY of its captions is among the k
  highest-scoring texts;
- text -> image: a query caption scores a hit at k if its own image is among the k
  highest-scoring images.

Ties are resolved in favour of the correct answer, deterministically: the rank of the
correct item is the number of candidates with a STRICTLY higher score (0 = best), and a
hit at k means rank < k. `torch.topk` would instead break ties by memory order, which
makes recall depend on how the candidates happen to be laid out.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Queries scored at once: keeps the similarity block at (1024, candidates) instead of the full
# (N, M) matrix, which for 5000 images x 25000 captions would take 1 GB in float64.
_QUERY_BLOCK = 1024


def retrieval_metrics(
    image: torch.Tensor,
    text: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k in both directions, as fractions in [0, 1], keyed "i2t_r{k}" and "t2i_r{k}".

    image: (N, D) embeddings; text: (M, D) embeddings; text_to_image: int64 (M,), the index
    of the image each caption describes. Every image must have at least one caption.
    """
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) embeddings, got {tuple(image.shape)} and {tuple(text.shape)}")
    if text_to_image.shape != (text.shape[0],):
        raise ValueError(f"text_to_image must have shape ({text.shape[0]},), got {tuple(text_to_image.shape)}")
    n_images = image.shape[0]
    if text_to_image.min() < 0 or text_to_image.max() >= n_images:
        raise ValueError(f"text_to_image must index into the {n_images} images")
    if torch.bincount(text_to_image, minlength=n_images).min() == 0:
        raise ValueError("every image needs at least one caption for image -> text recall")

    x = F.normalize(image.to(torch.float64), dim=1)
    y = F.normalize(text.to(torch.float64), dim=1)
    i2t_rank = _image_to_text_ranks(x, y, text_to_image)
    t2i_rank = _text_to_image_ranks(x, y, text_to_image)

    metrics = {}
    for k in ks:
        metrics[f"i2t_r{k}"] = (i2t_rank < k).double().mean().item()
    for k in ks:
        metrics[f"t2i_r{k}"] = (t2i_rank < k).double().mean().item()
    return metrics


def _image_to_text_ranks(x: torch.Tensor, y: torch.Tensor, text_to_image: torch.Tensor) -> torch.Tensor:
    """For each image, the rank of its best-scoring caption among all texts."""
    ranks = []
    for start in range(0, x.shape[0], _QUERY_BLOCK):
        scores = x[start : start + _QUERY_BLOCK] @ y.T  # (b, M)
        query = torch.arange(start, start + scores.shape[0])
        own_caption = text_to_image[None, :] == query[:, None]
        # "Any caption in the top k" is the same as "the best caption in the top k"; the image's
        # other captions never score strictly above its best one, so they cannot push it down.
        best_own = scores.masked_fill(~own_caption, -torch.inf).amax(dim=1, keepdim=True)
        ranks.append((scores > best_own).sum(dim=1))
    return torch.cat(ranks)


def _text_to_image_ranks(x: torch.Tensor, y: torch.Tensor, text_to_image: torch.Tensor) -> torch.Tensor:
    """For each caption, the rank of its own image among all images."""
    ranks = []
    for start in range(0, y.shape[0], _QUERY_BLOCK):
        scores = y[start : start + _QUERY_BLOCK] @ x.T  # (b, N)
        own_image = text_to_image[start : start + scores.shape[0], None]
        ranks.append((scores > scores.gather(1, own_image)).sum(dim=1))
    return torch.cat(ranks)

"""Zero-shot classification with a prompt ensemble (Radford et al. 2021, CLIP, Sec. 3.1.4).

Each class c is represented by the text embeddings of the prompts template.format(c), one per
template. The class embedding is the mean of the L2-normalised prompt embeddings, re-normalised
so that it lies on the unit sphere like the images; an image is assigned the class with the
highest cosine similarity.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def class_embeddings(
    encode_text: Callable[[list[str]], torch.Tensor],
    classnames: list[str],
    templates: list[str],
) -> torch.Tensor:
    """Prompt-ensemble embeddings (C, D), unit-norm, row c for classnames[c].

    encode_text is called once with all C * T prompts (class-major: every template for class 0,
    then class 1, ...) and must return their (C * T, D) embeddings; tokenising and batching are
    its business.
    """
    prompts = [template.format(classname) for classname in classnames for template in templates]
    prompt_embeddings = encode_text(prompts)
    if prompt_embeddings.shape[0] != len(prompts):
        raise ValueError(f"encode_text returned {prompt_embeddings.shape[0]} embeddings for {len(prompts)} prompts")
    per_class = F.normalize(prompt_embeddings.float(), dim=1).reshape(len(classnames), len(templates), -1)
    return F.normalize(per_class.mean(dim=1), dim=1)


def zeroshot_top1(image: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images (N, D) whose highest-cosine class among classes (C, D) equals labels (N,)."""
    scores = F.normalize(image.float(), dim=1) @ F.normalize(classes.float(), dim=1).T
    # argmax returns the first maximal index, so exact ties go to the lower class index.
    predictions = scores.argmax(dim=1)
    return (predictions == labels).double().mean().item()

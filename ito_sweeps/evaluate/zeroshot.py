"""Zero-shot classification with a prompt ensemble (Radford et al. 2021, CLIP, Sec. 3.1.4).

Each class c is represented by the text embeddings of the prompts template.format(c), one per
template. The class embedding is the mean of the L2-normalised prompt embeddings, re-normalised
so that it lies on the unit sphere like the images; an image is assigned the class with the
highest cosine similarity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier


def class_embeddings(model, tokenizer, classnames: list[str], templates: list[str], device: torch.device) -> torch.Tensor:
    """Prompt-ensemble embeddings (C, D), unit-norm, row c for classnames[c], by open_clip's own builder.

    model needs open_clip's `encode_text(tokens, normalize=True)`; tokenizer maps strings to tokens.
    """
    weights = build_zero_shot_classifier(model, tokenizer, classnames, templates, device=device)  # (D, C)
    return weights.T.float().cpu()


def zeroshot_top1(image: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images (N, D) whose highest-cosine class among classes (C, D) equals labels (N,)."""
    return zeroshot_metrics(image, classes, labels)["zeroshot_top1"]


def zeroshot_metrics(image: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """What CLIP_benchmark reports for zero-shot classification: top-1, top-5 (top-C with fewer than 5
    classes) and the mean over the classes present in labels of each class's recall (balanced accuracy)."""
    scores = F.normalize(image.float(), dim=1) @ F.normalize(classes.float(), dim=1).T
    # argmax returns the first maximal index, so exact ties go to the lower class index.
    predictions = scores.argmax(dim=1)
    hit = predictions == labels
    top5 = (scores.topk(min(5, classes.shape[0]), dim=1).indices == labels[:, None]).any(dim=1)
    present = labels.unique()
    recall = torch.stack([hit[labels == c].double().mean() for c in present])
    return {"zeroshot_top1": hit.double().mean().item(), "zeroshot_top5": top5.double().mean().item(),
            "zeroshot_mean_per_class_recall": recall.mean().item()}

"""Linear-probe top-1: how linearly separable the classes are in frozen image features.

As in the CLIP paper (Radford et al. 2021, Sec. 3.2), a multinomial logistic regression
(scikit-learn, L-BFGS) is fitted on the L2-normalised image embeddings of a train subset and
scored on the test embeddings; the encoder itself is never updated.

Unlike CLIP, the features are standardised (a StandardScaler fitted on the train features only)
before the regression. L2-normalised D-dimensional features have per-coordinate scale around
1/sqrt(D), so without it the strength of the penalty C would silently depend on the embedding
width; and contrastive embeddings are typically anisotropic (a few dominant directions), which
leaves L-BFGS badly conditioned and slow to converge within max_iter.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    C: float,
    max_iter: int,
    seed: int,
) -> float:
    """Test accuracy of a logistic regression fitted on (train_x (N, D), train_y (N,)).

    C is scikit-learn's inverse L2-penalty strength, max_iter the L-BFGS iteration cap, seed
    the estimator's random_state.
    """
    if torch.unique(train_y).numel() < 2:
        raise ValueError("linear probe needs at least 2 classes in train_y, got a single class")
    probe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, random_state=seed),
    )
    probe.fit(_features(train_x), train_y.cpu().numpy())
    return float(probe.score(_features(test_x), test_y.cpu().numpy()))


def _features(x: torch.Tensor) -> np.ndarray:
    return F.normalize(x.detach().float(), dim=1).cpu().numpy()

"""EDA text augmentation (Wei & Zou 2019): the in-modal positive of a caption.

A caption's positive is the caption after one word-level edit: random deletion, random
swap of two words, or synonym replacement. There is no WordNet (nothing can be downloaded),
so synonyms come from the data set itself (ImageTextSet.synonyms): words its captions
already use interchangeably, which keeps every positive inside the data set's vocabulary.

As in augment.py, every random number comes from an explicit torch.Generator, so a positive
is reproducible from the generator's state alone, whatever else draws from the global RNGs.
Each call takes one batch of 2 + 2 * n_words uniforms, whatever the operation: one call is
cheaper than many small ones, and the count does not depend on the operation drawn.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ito_sweeps.config import TextAugmentConfig

# Trailing punctuation is split off for the synonym lookup and put back after the new word,
# so "big," in "a red circle, big, on ..." is replaced like "big" and the comma stays.
_TRAILING_PUNCTUATION = ".,:;!?)"


def augment_caption(
    caption: str,
    generator: torch.Generator,
    cfg: TextAugmentConfig,
    synonyms: Mapping[str, Sequence[str]],
) -> str:
    """The caption after one EDA operation, chosen uniformly among those of strength > 0.

    Words are whitespace-separated and come back joined by single spaces. With every
    strength at 0, or no words, the caption comes back unchanged and nothing is drawn.
    """
    ops = [
        (op, strength)
        for op, strength in ((_delete, cfg.delete_p), (_swap, cfg.swap_frac), (_replace, cfg.synonym_frac))
        if strength > 0
    ]
    words = caption.split()
    if not ops or not words:
        return caption
    n = len(words)
    # draws[0] picks the operation, draws[1] the word that survives a full deletion,
    # draws[2:] are the operation's own: at most two per word for every operation.
    draws = torch.rand(2 + 2 * n, generator=generator).tolist()
    op, strength = ops[int(draws[0] * len(ops))]
    return " ".join(op(words, strength, draws, synonyms))


def _delete(words: list[str], p: float, draws: list[float], _: Mapping) -> list[str]:
    """Each word dropped with probability p; an empty result would be no caption at all."""
    kept = [word for word, u in zip(words, draws[2:]) if u >= p]
    return kept or [words[int(draws[1] * len(words))]]


def _swap(words: list[str], frac: float, draws: list[float], _: Mapping) -> list[str]:
    """max(1, int(frac * n)) swaps, each of two distinct random positions (EDA's count)."""
    n = len(words)
    if n < 2:
        return words
    words = list(words)
    for k in range(max(1, int(frac * n))):
        i = int(draws[2 + 2 * k] * n)
        j = int(draws[3 + 2 * k] * (n - 1))
        j += j >= i  # uniform over the n - 1 positions other than i
        words[i], words[j] = words[j], words[i]
    return words


def _replace(
    words: list[str], frac: float, draws: list[float], synonyms: Mapping[str, Sequence[str]]
) -> list[str]:
    """max(1, int(frac * n)) words that have synonyms, each replaced by a uniform pick among them."""
    n = len(words)
    cores = [word.rstrip(_TRAILING_PUNCTUATION) for word in words]
    candidates = [i for i, core in enumerate(cores) if synonyms.get(core)]
    if not candidates:
        return words
    # Sorting by independent uniform keys puts the candidates in a uniformly random order.
    candidates.sort(key=lambda i: draws[2 + i])
    words = list(words)
    for i in candidates[: max(1, int(frac * n))]:
        alternatives = synonyms[cores[i]]
        words[i] = alternatives[int(draws[2 + n + i] * len(alternatives))] + words[i][len(cores[i]) :]
    return words

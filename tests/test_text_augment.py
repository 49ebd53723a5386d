"""Tests of the EDA caption augmentation and of the synonym groups the data sets declare.

Each operation is checked against what it may and may not do to a caption of distinct words,
worked out here independently (a deletion keeps a subsequence, a swap keeps the multiset of
words, a replacement changes only words with synonyms and only to one of them).
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from ito_sweeps.config import TextAugmentConfig
from ito_sweeps.data.digits import load_digits_set
from ito_sweeps.data.imageset import synonym_map
from ito_sweeps.data.scenes import make_scenes
from ito_sweeps.data.text_augment import augment_caption

SYNONYMS = synonym_map(("large", "big"), ("small", "little"), ("objects", "shapes"))
# Distinct words, so a changed position can be told apart from the others.
CAPTION = "two objects: one big red circle left of a little blue square"
WORDS = CAPTION.split()
DELETE_ONLY = TextAugmentConfig(delete_p=0.3, swap_frac=0.0, synonym_frac=0.0)
SWAP_ONLY = TextAugmentConfig(delete_p=0.0, swap_frac=0.1, synonym_frac=0.0)
SYNONYM_ONLY = TextAugmentConfig(delete_p=0.0, swap_frac=0.0, synonym_frac=0.1)


def augment(caption: str, seed: int, cfg: TextAugmentConfig, synonyms=SYNONYMS) -> str:
    return augment_caption(caption, torch.Generator().manual_seed(seed), cfg, synonyms)


def is_subsequence(short: list[str], long: list[str]) -> bool:
    remaining = iter(long)
    return all(word in remaining for word in short)


def is_swap(out: list[str], swaps: int) -> bool:
    """Same words in another order, differing in at most two positions per swap."""
    differing = sum(a != b for a, b in zip(out, WORDS))
    return sorted(out) == sorted(WORDS) and 0 < differing <= 2 * swaps


def is_replacement(out: list[str]) -> bool:
    """Same length; every changed word is a synonym of the original (punctuation kept)."""
    if len(out) != len(WORDS) or out == WORDS:
        return False
    for new, old in zip(out, WORDS):
        core, tail = re.fullmatch(r"(.*?)([.,:;!?)]*)", old).groups()
        if new != old and not (new.endswith(tail) and new[: len(new) - len(tail)] in SYNONYMS.get(core, ())):
            return False
    return True


# --- deletion -------------------------------------------------------------------------


def test_full_deletion_keeps_exactly_one_word_of_the_caption():
    cfg = TextAugmentConfig(delete_p=1.0, swap_frac=0.0, synonym_frac=0.0)
    survivors = {augment(CAPTION, seed, cfg) for seed in range(200)}
    assert survivors <= set(WORDS)
    # The survivor is drawn uniformly, so 200 draws reach nearly all 11 words.
    assert len(survivors) >= 9


def test_deletion_keeps_the_order_of_the_remaining_words():
    outs = [augment(CAPTION, seed, DELETE_ONLY).split() for seed in range(200)]
    assert all(is_subsequence(out, WORDS) and 1 <= len(out) <= len(WORDS) for out in outs)
    # Each of 11 words goes with probability 0.3: about 3.3 deleted on average.
    mean_deleted = np.mean([len(WORDS) - len(out) for out in outs])
    assert 2.5 < mean_deleted < 4.1


# --- swap -----------------------------------------------------------------------------


def test_one_swap_exchanges_exactly_two_positions():
    # max(1, int(0.1 * 11)) = 1 swap of two distinct positions, and the words are distinct.
    for seed in range(100):
        out = augment(CAPTION, seed, SWAP_ONLY).split()
        assert sorted(out) == sorted(WORDS)
        assert sum(a != b for a, b in zip(out, WORDS)) == 2


def test_several_swaps_keep_the_words_and_move_at_most_two_per_swap():
    cfg = TextAugmentConfig(delete_p=0.0, swap_frac=0.3, synonym_frac=0.0)  # int(0.3 * 11) = 3 swaps
    outs = [augment(CAPTION, seed, cfg).split() for seed in range(100)]
    assert all(sorted(out) == sorted(WORDS) for out in outs)
    assert all(sum(a != b for a, b in zip(out, WORDS)) <= 6 for out in outs)
    assert any(out != WORDS for out in outs)


def test_swap_leaves_a_single_word_alone():
    assert augment("circle.", 0, SWAP_ONLY) == "circle."


# --- synonym replacement --------------------------------------------------------------


def test_full_replacement_swaps_every_synonym_word_and_keeps_punctuation():
    cfg = TextAugmentConfig(delete_p=0.0, swap_frac=0.0, synonym_frac=1.0)
    caption = "three objects: a red circle, big, with a small cyan ring and a little red cross"
    expected = "three shapes: a red circle, large, with a little cyan ring and a small red cross"
    assert all(augment(caption, seed, cfg) == expected for seed in range(20))


def test_replacement_changes_only_synonym_words_to_their_synonyms():
    # max(1, int(0.1 * 11)) = 1 of the three words with synonyms is replaced.
    outs = [augment(CAPTION, seed, SYNONYM_ONLY).split() for seed in range(100)]
    assert all(is_replacement(out) for out in outs)
    assert all(sum(a != b for a, b in zip(out, WORDS)) == 1 for out in outs)
    replaced = {next(old for new, old in zip(out, WORDS) if new != old) for out in outs}
    assert replaced == {"objects:", "big", "little"}


def test_replacement_picks_uniformly_among_several_synonyms():
    synonyms = synonym_map(("digit", "number", "numeral"))
    outs = [augment("the digit seven", seed, SYNONYM_ONLY, synonyms) for seed in range(200)]
    counts = {out: outs.count(out) for out in set(outs)}
    assert set(counts) == {"the number seven", "the numeral seven"}
    assert min(counts.values()) > 70


def test_replacement_leaves_captions_without_synonyms_unchanged():
    caption = "a red circle left of a blue square"
    assert all(augment(caption, seed, SYNONYM_ONLY) == caption for seed in range(20))
    assert augment(CAPTION, 0, SYNONYM_ONLY, synonyms={}) == CAPTION


# --- choice of operation ----------------------------------------------------------------


def test_each_call_applies_exactly_one_operation_chosen_uniformly():
    # Every operation here is strong enough to always change the caption, so each output
    # shows which one ran; an output mixing two would match none of the three.
    cfg = TextAugmentConfig(delete_p=0.5, swap_frac=0.1, synonym_frac=0.1)
    kinds = {"delete": 0, "swap": 0, "replace": 0}
    for seed in range(600):
        out = augment(CAPTION, seed, cfg).split()
        if len(out) < len(WORDS):
            assert is_subsequence(out, WORDS)
            kinds["delete"] += 1
        elif is_swap(out, swaps=1):
            kinds["swap"] += 1
        elif is_replacement(out):
            kinds["replace"] += 1
        else:
            # only a deletion that happened to drop nothing leaves the caption as it was
            assert out == WORDS
    # delete_p = 0.5 on 11 words drops none with probability 2**-11: ~200 each.
    assert all(150 < count < 250 for count in kinds.values()), kinds


def test_operations_of_strength_zero_are_never_chosen():
    assert all(augment(CAPTION, seed, SWAP_ONLY) != CAPTION for seed in range(50))


def test_all_strengths_zero_returns_the_caption_and_draws_nothing():
    cfg = TextAugmentConfig(delete_p=0.0, swap_frac=0.0, synonym_frac=0.0)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    assert augment_caption("a  big red\tcircle", generator, cfg, SYNONYMS) == "a  big red\tcircle"
    assert torch.equal(generator.get_state(), state)


def test_output_words_are_joined_by_single_spaces():
    assert augment("  a big\t red  circle ", 0, SWAP_ONLY).count(" ") == 3


# --- randomness -------------------------------------------------------------------------


def test_same_generator_state_gives_the_same_caption():
    cfg = TextAugmentConfig()
    assert [augment(CAPTION, s, cfg) for s in range(50)] == [augment(CAPTION, s, cfg) for s in range(50)]
    assert len({augment(CAPTION, s, SWAP_ONLY) for s in range(50)}) > 10


def test_no_global_rng_is_used_or_advanced():
    cfg = TextAugmentConfig(delete_p=0.3, swap_frac=0.2, synonym_frac=0.2)

    def run(global_seed: int) -> list[str]:
        torch.manual_seed(global_seed)
        random.seed(global_seed)
        np.random.seed(global_seed)
        torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
        generator = torch.Generator().manual_seed(11)
        outs = [augment_caption(CAPTION, generator, cfg, SYNONYMS) for _ in range(30)]
        assert torch.equal(torch.get_rng_state(), torch_state)
        assert random.getstate() == py_state
        assert np.array_equal(np.random.get_state()[1], np_state[1])
        return outs

    assert run(0) == run(12345)


def test_generator_advances_the_same_whatever_operation_runs():
    # A fixed draw count per caption keeps the stream aligned from sample to sample.
    states = []
    for cfg in (DELETE_ONLY, SWAP_ONLY, SYNONYM_ONLY):
        generator = torch.Generator().manual_seed(3)
        augment_caption(CAPTION, generator, cfg, SYNONYMS)
        states.append(generator.get_state())
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], states[2])


# --- the data sets' synonyms ------------------------------------------------------------


def vocabulary(captions: list[list[str]]) -> set[str]:
    return {word.rstrip(".,:;!?)") for paraphrases in captions for c in paraphrases for word in c.split()}


@pytest.mark.parametrize(
    ("load", "groups"),
    [
        (lambda: make_scenes(200, 0, 16, 5), [{"large", "big"}, {"small", "little"}, {"objects", "shapes"}]),
        (lambda: load_digits_set(0, 8, 5), [{"digit", "number", "numeral"}, {"handwritten", "hand-written"}]),
    ],
    ids=["scenes", "digits"],
)
def test_data_sets_declare_synonym_groups_of_their_own_words(load, groups):
    data = load()
    words = vocabulary(data.captions)
    assert set(data.synonyms) == set().union(*groups)
    for group in groups:
        assert group <= words  # every member occurs in this data set's captions
        for word in group:
            assert set(data.synonyms[word]) == group - {word}
    assert data.subset(slice(0, 10)).synonyms == data.synonyms


def test_augmented_scene_captions_stay_in_the_scene_vocabulary():
    data = make_scenes(200, 0, 16, 5)
    words = vocabulary(data.captions)
    cfg = TextAugmentConfig(delete_p=0.0, swap_frac=0.0, synonym_frac=0.5)
    generator = torch.Generator().manual_seed(0)
    augmented = [[augment_caption(c, generator, cfg, data.synonyms) for c in cs] for cs in data.captions[:50]]
    assert vocabulary(augmented) <= words
    assert sum(a != c for a_s, cs in zip(augmented, data.captions) for a, c in zip(a_s, cs)) > 100


# ---- in the training data: the augmented copy the latent_structure objective contrasts with ----------


def test_views_dataset_appends_a_synonym_variant_of_the_first_caption():
    import itertools

    from ito_sweeps import config as C
    from ito_sweeps.data.loader import ViewsDataset
    from ito_sweeps.models.towers import build_tokenizer

    cfg = C.load(None, ["data.image_size=16", "data.num_train=16", "data.batch_size=8",
                        "data.text_augment.delete_p=0", "data.text_augment.swap_frac=0"])
    data = make_scenes(16, 0, 16, 5)
    tokenizer = build_tokenizer(cfg)
    plain = ViewsDataset(data, tokenizer, 2, 2, cfg.data, seed=0)
    augmented = ViewsDataset(data, tokenizer, 2, 2, cfg.data, seed=0, augmented_captions=1)
    for i in range(16):
        _, views, tokens = augmented[(0, i)]
        _, plain_views, plain_tokens = plain[(0, i)]
        # the augmented copy is drawn after the views and captions: those stay as without it
        assert torch.equal(views, plain_views) and torch.equal(tokens[:2], plain_tokens)
        assert tokens.shape[0] == 3 and torch.equal(tokens, augmented[(0, i)][2])  # reproducible
        (first,) = [c for c in data.captions[i] if torch.equal(tokenizer([c])[0], tokens[0])]
        # every caption the synonym operation could make: each synonym word kept or replaced
        words = first.split()
        bare = [w.rstrip(".,:;") for w in words]
        choices = [[w, *(s + w[len(b):] for s in data.synonyms.get(b, ()))] for w, b in zip(words, bare)]
        candidates = {" ".join(c) for c in itertools.product(*choices)} - {first}
        assert any(torch.equal(tokenizer([c])[0], tokens[2]) for c in candidates), (first, i)

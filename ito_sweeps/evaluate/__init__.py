"""Evaluation metrics on a held-out split, as pure functions of embedding tensors.

- `geometry`: modality gap, paired distances, alignment and uniformity of the joint space.
- `retrieval`: image->text and text->image recall@k with several captions per image.
- `zeroshot`: prompt-ensemble class embeddings and zero-shot top-1.
- `probe`: linear-probe top-1 with logistic regression on frozen image features.

Every function takes tensors (or a text-encoding callable) and returns numbers; none of
them touches a model, a data loader or the disk.
"""

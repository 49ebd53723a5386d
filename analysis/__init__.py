"""Analysis of recorded sweeps: ablation tables, modality-gap and training-dynamics plots, reports."""

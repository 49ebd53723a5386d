"""Analysis of recorded sweeps: ablation tables and modality-gap plots (next issues)."""

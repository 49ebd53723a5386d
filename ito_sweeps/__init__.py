"""ito-sweeps: ITO-style image-text contrastive pretraining, swept on Ray and tracked in MLflow."""

"""Training: the SFT loop, the three stages' pairs, where a stage runs (local processes or a Kubeflow job),
checkpoints, stepwise internalisation and CTS's reference model. On ``twt.core`` and ``twt.method``."""

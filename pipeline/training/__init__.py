"""Training and evaluation: the memory-mapped window dataset, the training loop (resume, DDP),
checkpoints, the paper's metrics and the authors' definitions, the evaluation with its
baselines, and the small audio -> emotion classifier.

May import: kfusion.pipeline.io, kfusion.pipeline.data (the window format), kfusion.model,
kfusion.config.
"""

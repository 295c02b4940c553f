"""emonet-dist: distributed multi-corpus speech emotion recognition (EmoNet residual adapters).

Layout: ``config`` (the typed config tree), ``corpora`` (recipes, manifests, partitions, synthetic corpora),
``data`` (WebDataset shards, per-rank streaming, corpus schedule), ``model`` (frontend, ResNet with adapters,
pooling, heads), ``train`` (Ray Train loop), ``evaluate`` (metrics, McNemar, reports), ``cli`` (``emonet``).
"""

__version__ = "0.1.0"

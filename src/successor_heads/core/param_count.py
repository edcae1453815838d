"""The one parameter counter: the architecture a ``config.json`` describes, built on the meta
device (no weights are read or allocated), its parameters summed (tied ones once). The models
stage records it in ``manifest.json``; a zoo entry without a model file sizes its resources by it."""

from __future__ import annotations

from typing import Any


def count_params(config: dict[str, Any]) -> tuple[int, str | None]:
    """Parameter count and stored dtype of the causal LM that ``config`` (a parsed
    ``config.json``) describes.

    Returns:
        ``(n_params, dtype name or None)``; norms, biases and learned positions included.

    Raises:
        ValueError: transformers cannot build the architecture (unknown ``model_type``, a
            config it rejects), with its message.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    try:
        cfg = AutoConfig.for_model(config.get("model_type"), **kwargs)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a config it cannot build
        raise ValueError(f"cannot build model_type={config.get('model_type')!r} to count its parameters: {e}") from e
    dt = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    return int(sum(p.numel() for p in model.parameters())), (str(dt).replace("torch.", "") if dt is not None else None)

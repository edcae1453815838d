"""The OV read-out: a head's OV output read through the unembedding, the paper's effective OV
circuit ``W_U W_OV x`` (Section 2). The one implementation behind the successor scores, the
features stage's head score, vector arithmetic and the greater-than bias.

Three steps, each built on the one before, all in float32 whatever the model's dtype:

* :func:`ov_output`: every (chosen) head's OV output ``W_OV^h x`` (:meth:`Adapter.ov`);
* :func:`ov_readout`: that output as the unembedding reads it (final norm under
  ``norms="applied"``; :meth:`Adapter.unembed_input`), ``[n_heads, n, d_model]``, for callers
  that multiply by ``W_U`` themselves (the batched successor scores);
* :func:`head_task_logits`: one head's read-out times the ``W_U`` columns of a task's tokens
  (:func:`task_logits` is the same without a head: ``x`` read straight through the unembedding).
"""

from __future__ import annotations

import torch

from successor_heads.core.adapters import Adapter


@torch.no_grad()
def ov_output(adapter: Adapter, layer: int, x: torch.Tensor, norms: str = "raw", heads=None,
              value_bias: bool = False, input_norm: bool | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Each head's OV output for residual vectors the head attends to (paper Section 2,
    ``W_OV^h = W_V^h W_O^h``).

    Args:
        adapter: the model's :class:`~successor_heads.core.adapters.Adapter`.
        layer: the heads' layer.
        x: ``[n, d_model]`` residual vectors (any dtype or device).
        norms: ``"raw"`` or ``"applied"`` (:meth:`Adapter.ov`).
        heads: head indices ``[k]`` (None: all ``n_heads``).
        value_bias: add ``b_V^h W_O^h`` (config ``scores.value_bias``; default False, the paper's
            circuit).
        input_norm: apply the layer's attention input norm first (default ``norms == "applied"``).
        out: a contiguous float32 ``[k, n, d_model]`` tensor to write the result into (reused
            across layers by the batched scores; :meth:`Adapter.ov`).

    Returns:
        ``[k, n, d_model]`` float32 on the adapter's device (``out`` when given).

    Raises:
        ValueError: an unknown ``norms``.
    """
    heads = None if heads is None else torch.as_tensor(heads, dtype=torch.long)
    # float32 in: Adapter.ov computes in float32, so a bf16 round trip would only lose precision
    return adapter.ov(layer, x.to(adapter.device, torch.float32), norms, heads=heads, value_bias=value_bias,
                      input_norm=input_norm, out=out)


@torch.no_grad()
def ov_readout(adapter: Adapter, layer: int, x: torch.Tensor, norms: str = "raw", heads=None,
               value_bias: bool = False, input_norm: bool | None = None, out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """:func:`ov_output` as the unembedding reads it: final-normed under ``norms="applied"``, so
    that ``ov_readout(...) @ W_U + b_U`` are the heads' effective OV logits (paper Section 2).

    Args and errors as :func:`ov_output`. Returns ``[k, n, d_model]`` float32 on the adapter's
    device (``out`` when given).
    """
    normed = adapter.unembed_input(ov_output(adapter, layer, x, norms, heads, value_bias, input_norm, out), norms)
    return normed if out is None or normed is out else out.copy_(normed)  # raw: normed is out


@torch.no_grad()
def task_logits(adapter: Adapter, x: torch.Tensor, token_ids, norms: str = "raw") -> torch.Tensor:
    """Residual vectors ``x [n, d_model]`` read straight through the unembedding, restricted to
    ``token_ids [n_tokens]``: ``[n, n_tokens]`` float32 logits on the CPU (the final norm first
    under ``norms="applied"``; :meth:`Adapter.unembed`).

    Raises:
        ValueError: an unknown ``norms``.
        IndexError: a token id outside the vocabulary.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long)
    # float32 in: unembed computes in float32 whatever the model dtype
    return adapter.unembed(x.to(adapter.device, torch.float32), norms, token_ids=ids).float().cpu()


@torch.no_grad()
def head_task_logits(adapter: Adapter, layer: int, head: int, x: torch.Tensor, token_ids,
                     norms: str = "raw", value_bias: bool = False) -> torch.Tensor:
    """Head ``layer.head``'s OV output read through the unembedding, restricted to ``token_ids``
    (the paper's effective OV circuit ``W_U W_V W_O x``, Section 2).

    Args:
        x: ``[n, d_model]`` residual vectors the head attends to.
        token_ids: ``[n_tokens]`` the logits' columns.
        norms: as :func:`ov_output` and :func:`task_logits`.
        value_bias: add ``b_V W_O`` (config ``scores.value_bias``; default False, the paper's circuit).

    Returns:
        ``[n, n_tokens]`` float32 logits on the CPU.

    Raises:
        ValueError: an unknown ``norms``.
        IndexError: a token id outside the vocabulary.
    """
    return task_logits(adapter, ov_output(adapter, layer, x, norms, [head], value_bias)[0], token_ids, norms)

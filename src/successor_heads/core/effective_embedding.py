"""Effective embeddings: what a head's OV circuit reads for token t (docs/DESIGN.md, Effective embedding modes).

* ``mlp0`` (the paper's, Section 2): ``MLP0(W_E[t])``, the first MLP's output on the token's
  embedding alone (:func:`mlp0_embeddings`, also the space of the features and editing stages);
  the same vector for every layer.
* ``resid`` (ours): the residual stream entering each layer at the token's position, from a
  real forward pass over a short neutral prefix (BOS, when the tokenizer has one) + the token.
  The head reads it through its layer's attention input norm, so that norm is always applied
  before ``W_V`` in this mode (:func:`head_input_norm`).

Both return ``[n_layers, n_tokens, d_model]`` so scoring code treats them alike. Which norms
apply where, per mode and ``norms`` option, is the table in docs/DESIGN.md ("Norm conventions").
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from successor_heads.core.adapters import Adapter
from successor_heads.core import MODES
from successor_heads.core.streaming import mlp0_circuit, resident, streamed_of



# Where each norm is applied, per (mode, norms): the table of docs/DESIGN.md, "Norm conventions".
# Keys: MLP0's input norm (and Gemma3's post-MLP norm), the attention input norm before W_V, the
# post-attention norm after the head (Gemma3 only), the final norm before W_U.
NORM_CONVENTIONS: dict[tuple[str, str], dict[str, bool | None]] = {
    ("mlp0", "raw"): {"mlp0_in": False, "attn_in": False, "attn_out": False, "final": False},
    ("mlp0", "applied"): {"mlp0_in": True, "attn_in": True, "attn_out": True, "final": True},
    # resid vectors come from a real forward pass (every norm below them ran); the head reads
    # them through its own input norm
    ("resid", "raw"): {"mlp0_in": None, "attn_in": True, "attn_out": False, "final": False},
    ("resid", "applied"): {"mlp0_in": None, "attn_in": True, "attn_out": True, "final": True},
}


def norm_convention(mode: str, norms: str) -> dict[str, bool | None]:
    """Which norms the effective OV circuit applies for ``mode`` and ``norms``: a dict with keys
    ``mlp0_in``, ``attn_in``, ``attn_out``, ``final`` (True/False; None where it does not apply).
    Recorded in every scores output. Source: paper Section 2 (effective OV circuit) and
    docs/DESIGN.md, Norm conventions.

    Raises: ValueError for an unknown ``mode`` or ``norms``.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: must be one of {MODES}")
    if norms not in ("raw", "applied"):
        raise ValueError(f"norms={norms!r}: must be raw or applied")
    return dict(NORM_CONVENTIONS[mode, norms])


def head_input_norm(mode: str, norms: str) -> bool:
    """Whether the layer's attention input norm is applied to an effective embedding before
    ``W_V``: always in ``resid`` mode (a real residual vector, read as the head reads it), and in
    ``mlp0`` mode only with ``norms="applied"`` (:func:`norm_convention`).

    Raises: ValueError for an unknown ``mode`` or ``norms``.
    """
    return bool(norm_convention(mode, norms)["attn_in"])


def neutral_prefix(tokenizer) -> list[int]:
    """Token ids put before each token in ``resid`` mode: ``[bos]`` if the tokenizer has a BOS
    token, else ``[eos]`` if it has one (a document boundary), else ``[]``."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [int(tid)]
    return []


@torch.no_grad()
def mlp0_embeddings(adapter: Adapter, token_ids, norms: str = "raw", batch_size: int | None = None) -> torch.Tensor:
    """The paper's effective embedding ``MLP0(W_E[t])`` (Section 2): the first MLP's output on
    each token's embedding alone (:meth:`Adapter.mlp0`, float32 whatever the model's dtype).

    Args:
        adapter: the model's :class:`~successor_heads.core.adapters.Adapter`.
        token_ids: ``[n_tokens]`` token ids.
        norms: ``"raw"`` (layer 0's MLP input norm skipped) or ``"applied"``.
        batch_size: tokens per MLP0 call (None: all at once).

    Returns:
        ``[n_tokens, d_model]`` float32 on the adapter's device.

    Raises:
        ValueError: an empty ``token_ids`` or an unknown ``norms``.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("token_ids is empty: nothing to embed")
    chunks = [ids] if batch_size is None else ids.split(batch_size)
    # a streamed model reads W_E and layer 0's MLP (and its norms) for this block only
    with resident(adapter.model, *mlp0_circuit(adapter)):
        out = [adapter.mlp0(adapter.embed(c), norms).float() for c in chunks]
    return out[0] if len(out) == 1 else torch.cat(out)


@torch.no_grad()
def effective_embeddings(
    adapter: Adapter,
    token_ids: torch.Tensor,
    mode: str = "mlp0",
    norms: str = "raw",
    prefix_ids: list[int] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Effective embeddings of ``token_ids [n_tokens]`` -> ``[n_layers, n_tokens, d_model]`` (float32).

    ``mlp0``: ``MLP0(embed(t))`` with layer 0's MLP input norm skipped (``norms="raw"``) or
    applied (``"applied"``), expanded (a view, no copy) over layers. ``resid``: hidden state
    entering layer L at the last position of ``prefix_ids + [t]`` (``norms`` does not apply:
    these are the model's real activations, un-normed; for a hybrid, layer L is decoder layer
    ``adapter.attention_layers[L]``; scoring applies the head's input norm,
    see :func:`head_input_norm`). A model streamed from disk runs all tokens in one batch, so
    each decoder layer is read once.

    Raises:
        ValueError: unknown ``mode``, or an empty ``token_ids``.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: must be one of {MODES}")
    token_ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if token_ids.numel() == 0:
        raise ValueError("token_ids is empty: no succession tokens survived the single-token filter")
    n_layers = adapter.dims.n_layers
    if mode == "mlp0":
        x_TM = mlp0_embeddings(adapter, token_ids, norms)
        return x_TM.unsqueeze(0).expand(n_layers, *x_TM.shape)
    prefix = list(prefix_ids or [])
    if streamed_of(adapter.model) is not None:
        batch_size = max(batch_size, len(token_ids))  # one pass: each layer is read from disk once
    out = []
    chunks = token_ids.split(batch_size)
    for chunk in tqdm(chunks, desc="resid effective embeddings", disable=not progress):
        ids = torch.cat([torch.tensor(prefix, dtype=torch.long).expand(len(chunk), len(prefix)), chunk[:, None]], 1)
        hs = adapter.model(input_ids=ids.to(adapter.device), output_hidden_states=True).hidden_states
        # hs[i] enters decoder layer i; a hybrid's layer k is decoder layer attention_layers[k]
        out.append(torch.stack([hs[i][:, -1].float() for i in adapter.attention_layers]))
    return torch.cat(out, 1)

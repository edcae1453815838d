"""Effective embeddings: what a head's OV circuit reads for token t (DESIGN.md, Effective embedding modes).

* ``mlp0`` (the paper's, Section 2): ``MLP0(W_E[t])``, the first MLP's output on the token's
  embedding alone; the same vector for every layer.
* ``resid`` (ours): the residual stream entering each layer at the token's position, from a
  real forward pass over a short neutral prefix (BOS, when the tokenizer has one) + the token.

Both return ``[n_layers, n_tokens, d_model]`` so scoring code treats them alike.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .adapters import Adapter

MODES = ("mlp0", "resid")


def neutral_prefix(tokenizer) -> list[int]:
    """Token ids put before each token in ``resid`` mode: ``[bos]`` if the tokenizer has a BOS
    token, else ``[eos]`` if it has one (a document boundary), else ``[]``."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [int(tid)]
    return []


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
    these are the model's real activations; the head's own input norm is applied downstream).

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
        x_TM = adapter.mlp0(adapter.embed(token_ids), norms).float()
        return x_TM.unsqueeze(0).expand(n_layers, *x_TM.shape)
    prefix = list(prefix_ids or [])
    out = []
    chunks = token_ids.split(batch_size)
    for chunk in tqdm(chunks, desc="resid effective embeddings", disable=not progress):
        ids = torch.cat([torch.tensor(prefix, dtype=torch.long).expand(len(chunk), len(prefix)), chunk[:, None]], 1)
        hs = adapter.model(input_ids=ids.to(adapter.device), output_hidden_states=True).hidden_states
        out.append(torch.stack([h[:, -1].float() for h in hs[:n_layers]]))
    return torch.cat(out, 1)

"""The unembedding end of a model (docs/DESIGN.md, "Architecture facts"): ``W_U`` and ``b_U`` with
the family's logit scale folded in, the final logit soft-cap, and residual vectors read through the
final norm and the unembedding (the ``W_U`` end of the paper's Section 2 circuit). A base of
:class:`~successor_heads.core.adapters.adapter.Adapter`, which provides ``model``, ``cfg``,
``spec``, ``device``, ``final_norm`` and ``run_f32``."""

from __future__ import annotations

import torch

from .parts import check_norms as _check_norms


class Readout:
    """``W_U``, ``b_U``, the logit scale and soft-cap, and the unembedding of residual vectors."""

    @property
    def logit_softcap(self) -> float | None:
        """The final logit soft-cap ``c`` (logits become ``c * tanh(logits / c)``), or None."""
        key = self.spec.logit_softcap
        return getattr(self.cfg, key, None) if key else None

    @property
    def W_U(self) -> torch.Tensor:
        """``[d_model, d_vocab]`` unembedding (W_E transposed when embeddings are tied), times the
        family's logit scale where it has one (Cohere's ``logit_scale``)."""
        W = self.model.get_output_embeddings().weight.T
        return W * self.logit_scale if self.logit_scale is not None else W

    @property
    def b_U(self) -> torch.Tensor | None:
        """``[d_vocab]`` unembedding bias (times the logit scale, as :attr:`W_U`), or None."""
        b = getattr(self.model.get_output_embeddings(), "bias", None)
        return b * self.logit_scale if (b is not None and self.logit_scale is not None) else b

    @property
    def logit_scale(self) -> float | None:
        """The constant the model multiplies its logits by (Cohere's ``logit_scale``; one over
        Granite's ``logits_scaling``), or None; :attr:`W_U` and :attr:`b_U` include it."""
        key = self.spec.logit_scale
        if not key:
            return None
        value = getattr(self.cfg, key.removeprefix("1/"), None)
        return None if value is None else (1.0 / value if key.startswith("1/") else value)

    def unembed(self, x: torch.Tensor, norms: str = "raw", token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits for residual vectors (the ``W_U`` end of the paper's Section 2 circuit).

        Gemma's final logit soft-cap is monotone, so it is left out (it cannot change which token
        is largest).

        Args:
            x: ``[..., d_model]``.
            norms: ``"applied"`` runs the final norm first; ``"raw"`` does not.
            token_ids: ``[n]`` the vocabulary columns to compute (None: all ``d_vocab``).

        Returns:
            float32 ``[..., d_vocab]`` (or ``[..., n]``).

        Raises:
            ValueError: ``norms`` is not one of :data:`NORM_OPTIONS`.
            IndexError: an id outside ``d_vocab``.
        """
        W_U, b_U = self.unembed_columns(token_ids)
        out = self.unembed_input(x, norms) @ W_U.float()
        return out if b_U is None else out + b_U.float()

    def unembed_input(self, x: torch.Tensor, norms: str = "raw") -> torch.Tensor:
        """What the unembedding multiplies (the ``W_U`` end of the effective OV circuit, paper Section 2).

        Args:
            x: ``[..., d_model]``.
            norms: ``"applied"`` runs the final norm; ``"raw"`` only casts.

        Returns:
            float32 ``[..., d_model]``.

        Raises:
            ValueError: ``norms`` is not one of :data:`NORM_OPTIONS`.
        """
        _check_norms(norms)
        return self.run_f32(self.final_norm(), x) if norms == "applied" else x.float()

    def unembed_columns(self, token_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unembedding columns gathered once, so callers scoring many heads against the same tokens reuse them.

        Args:
            token_ids: ``[n]`` vocabulary ids (None: all ``d_vocab``).

        Returns:
            ``(W_U [d_model, n], b_U [n] or None)`` in the model's dtype.

        Raises:
            IndexError: an id outside ``d_vocab``.
        """
        if token_ids is None:
            return self.W_U, self.b_U
        ids = torch.as_tensor(token_ids, dtype=torch.long).to(self.device)
        b = self.b_U
        return self.W_U[:, ids], None if b is None else b[ids]

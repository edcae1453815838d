"""The one label of an attention head, ``L{layer}H{head}`` (e.g. ``L12H0``: head 0 of layer 12,
both 0-based, the paper's notation), used in every table, summary, attribute and figure title."""

from __future__ import annotations


def head_label(layer: int, head: int) -> str:
    """``L{layer}H{head}`` for a head (numpy integers allowed), e.g. ``head_label(12, 0) == "L12H0"``."""
    return f"L{int(layer)}H{int(head)}"


def flat_head_label(flat: int, n_heads: int) -> str:
    """The label of the head at ``flat = layer * n_heads + head`` (a row of a ``[n_layers * n_heads]``
    axis)."""
    return head_label(*divmod(int(flat), int(n_heads)))


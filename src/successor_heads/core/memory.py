"""How a stage holds a model's weights: in memory, or streamed from disk (``model.memory``; ours,
docs/DESIGN.md, "Large models"). Torch-free, so the workflow sizes a job's memory while planning
with the same rule the job applies when it opens the model.
"""

from __future__ import annotations

from successor_heads.core import MEMORY

#: ``model.memory`` choices: ``auto`` streams when the weights at the run's dtype exceed
#: :data:`STREAM_SHARE` of the memory available; ``in_memory`` and ``streamed`` force one way.
MEMORY_CHOICES = MEMORY
#: Share of the available memory (psutil's ``available``, or the job's ``mem_mb`` when smaller)
#: above which ``auto`` streams: the rest is left for activations and the other stages' data.
STREAM_SHARE = 0.5
#: A streamed model's job memory: a base for the interpreter, tokenizer and activations, plus a
#: share of the weights at the run's dtype for what is held at once (two decoder layers, the
#: embedding and unembedding, page-cache pressure).
STREAMED_BASE_MB, STREAMED_SHARE = 4000, 0.25
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def weights_bytes(n_params: int, dtype: str) -> int:
    """Bytes ``n_params`` parameters take at ``dtype`` (one of ``core.DTYPES``; ours).

    Raises:
        KeyError: an unknown dtype.
    """
    return int(n_params or 0) * _BYTES[dtype]


def choose_memory(memory: str, weight_bytes: int, mem_mb: int | None = None,
                  available_bytes: int | None = None) -> str:
    """Resolve ``model.memory`` to ``"in_memory"`` or ``"streamed"`` (ours).

    Args:
        memory: ``"auto"``, ``"in_memory"`` or ``"streamed"`` (:data:`MEMORY_CHOICES`).
        weight_bytes: the weights' size at the run's dtype, bytes.
        mem_mb: the job's memory limit in MB (``model.resources.mem_mb``), or None.
        available_bytes: the memory available now (default: ``psutil.virtual_memory().available``).

    Returns:
        ``memory`` itself unless it is ``"auto"``; then ``"streamed"`` when ``weight_bytes`` exceeds
        :data:`STREAM_SHARE` of the smaller of the available memory and ``mem_mb``.

    Raises:
        ValueError: ``memory`` is not one of :data:`MEMORY_CHOICES`.
    """
    if memory not in MEMORY_CHOICES:
        raise ValueError(f"model.memory={memory!r}: must be one of {', '.join(MEMORY_CHOICES)}")
    if memory != "auto":
        return memory
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    budget = min(available_bytes, mem_mb * 2**20) if mem_mb else available_bytes
    return "streamed" if weight_bytes > STREAM_SHARE * budget else "in_memory"


def job_mem_mb(memory: str, n_params: int, dtype: str, mem_mb: int, available_bytes: int | None = None) -> int:
    """The memory (MB) a job that opens the model asks for: ``mem_mb`` (the in-memory figure of
    ``model.resources``) when it holds the model in memory, else ``STREAMED_BASE_MB +
    STREAMED_SHARE * weights``, never more than ``mem_mb``. ``auto`` is resolved by
    :func:`choose_memory` against this machine's available memory (the machine that plans a local
    run runs it; on a cluster set ``model.memory`` explicitly). Ours.

    Raises:
        ValueError: ``memory`` is not one of :data:`MEMORY_CHOICES`.
        KeyError: an unknown dtype.
    """
    weights = weights_bytes(n_params, dtype)
    if choose_memory(memory, weights, mem_mb, available_bytes) == "in_memory":
        return int(mem_mb)
    return min(int(mem_mb), int(STREAMED_BASE_MB + STREAMED_SHARE * weights / 2**20))

"""Natural-text corpora cut into fixed-length token contexts (paper Section 4.3, "Successor
heads in the wild"; docs/DESIGN.md, Natural text without a network).

The paper ablates heads on 128 contexts of 512 tokens from The Pile. Three corpus kinds are
configured in ``config/corpus/`` (:class:`CorpusConfig`):

* ``pydoc`` (default, offline): the English reference text that ships with CPython
  (``pydoc_data.topics``, 79 topics, about 465 kB). The embedded default takes 16 contexts of
  128 tokens so the main command stays quick on two cores; the outputs record the numbers.
* ``files``: local text files matched by ``corpus.glob`` (sorted; ``**`` recurses).
* ``hf_dataset``: a Hugging Face dataset (The Pile or a mirror), streamed; needs a network (or
  ``HF_DATASETS_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` with a local cache) and the ``datasets`` package.

Cutting is deterministic: documents (in a fixed order) are tokenised without special tokens and
joined with the EOS token (or a blank line when the tokenizer has none) into one stream; the
stream is cut into non-overlapping windows of ``context_len - 1`` tokens (``context_len`` when
there is no BOS to prepend), and ``n_contexts`` windows evenly spaced over the stream are kept,
so the contexts cover the whole corpus rather than its first pages. Each context then gets the
tokenizer's BOS token in front (when it has one), as the models saw in training.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from successor_heads.core.config import ConfigError, bounded, one_of
from successor_heads.core.hub import HUB_TIMEOUT_S

log = logging.getLogger(__name__)

OFFLINE_HINT = ("use the offline corpus with `corpus=pydoc` (CPython's reference text) or local files with "
                "`corpus=files corpus.glob='/path/*.txt'`")


#: natural-text sources (``corpus.kind``) and the keys each one needs
CORPUS_KINDS = {"pydoc": (), "files": ("glob",), "hf_dataset": ("hf_dataset",)}


@dataclass(frozen=True)
class CorpusConfig:
    """The ``corpus`` config section: natural text for the ``wild`` and ``editing`` stages
    (:func:`load_corpus`; paper: 128 x 512 tokens from The Pile)."""

    name: str = "pydoc"
    kind: str = "pydoc"
    glob: Optional[str] = None  # files: sorted glob, ** recurses
    hf_dataset: Optional[str] = None  # hf_dataset: hub id, streamed
    hf_split: str = "train"
    hf_text_field: str = "text"
    n_contexts: int = 16  # embedded default kept small for 2 CPU cores (paper: 128)
    context_len: int = 128  # tokens per context, BOS included (paper: 512)
    prepend_bos: bool = True  # put the tokenizer's BOS token first when it has one

    def __post_init__(self):
        one_of("corpus.kind", self.kind, CORPUS_KINDS)
        bounded("corpus.n_contexts", self.n_contexts, ge=1)
        bounded("corpus.context_len", self.context_len, ge=2)
        needs = CORPUS_KINDS[self.kind]
        if not all(getattr(self, k) for k in needs):
            raise ConfigError(f"corpus.kind={self.kind} needs " + " and ".join(f"corpus.{k}" for k in needs))


class CorpusError(ValueError):
    """A corpus cannot be loaded or is too short; the message says what to change."""


@dataclass
class Corpus:
    """Token contexts cut from a corpus.

    ``tokens [n_contexts, context_len]`` (int64) holds the contexts, BOS first when
    ``has_bos``. ``description`` says where the text came from (written into outputs).
    """

    name: str
    tokens: torch.Tensor
    has_bos: bool
    description: str
    n_documents: int
    n_corpus_tokens: int
    n_windows: int
    window_index: list[int] = field(default_factory=list)

    @property
    def n_contexts(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context_len(self) -> int:
        return int(self.tokens.shape[1])


def pydoc_texts() -> tuple[list[str], str]:
    """The topics of CPython's ``pydoc_data.topics`` in sorted key order, and a description.

    Raises: CorpusError when this Python ships without ``pydoc_data`` (some minimal builds).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # pragma: no cover - depends on the Python build
        raise CorpusError(
            f"this Python has no pydoc_data.topics ({e}); use `corpus=files corpus.glob=...` instead"
        ) from e
    import platform

    keys = sorted(topics)
    return [topics[k] for k in keys], f"pydoc_data.topics (CPython {platform.python_version()}, {len(keys)} topics)"


def file_texts(pattern: str | None) -> tuple[list[str], str]:
    """Read every file matching ``pattern`` (sorted; ``~`` and ``$VARS`` expanded; ``**`` recurses).

    Raises:
        CorpusError: no pattern; the pattern matches no file; a file cannot be read or is not
            UTF-8 text (the message names the file).
    """
    if not pattern or pattern == "???":
        raise CorpusError("corpus=files needs corpus.glob, e.g. `corpus=files corpus.glob='/data/text/*.txt'`")
    expanded = os.path.expandvars(os.path.expanduser(str(pattern)))
    paths = sorted(p for p in globlib.glob(expanded, recursive=True) if not os.path.isdir(p))
    if not paths:
        raise CorpusError(
            f"corpus.glob={pattern!r} matched no files (resolved from {os.getcwd()}); "
            f"check the path, or {OFFLINE_HINT.split(' or ')[0]}"
        )
    texts = []
    for p in paths:
        try:
            texts.append(Path(p).read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise CorpusError(f"corpus file {p} is not UTF-8 text ({e}); remove it from corpus.glob") from e
        except OSError as e:
            raise CorpusError(
                f"corpus file {p} cannot be read ({e.strerror or e}); fix its permissions or corpus.glob") from e
    return texts, f"{len(paths)} file(s) matching {pattern}"


def hf_texts(name: str | None, n_tokens_needed: int, count_tokens: Callable[[str], int],
             reachable: Callable[[], bool] | None = None, *, split: str = "train",
             field_name: str = "text") -> tuple[list[str], str]:
    """Stream documents of the Hugging Face dataset ``name`` (its ``split``, text in column
    ``field_name``) until about ``n_tokens_needed`` tokens are read.

    ``reachable`` (default :func:`successor_heads.core.hub.hub_reachable`) is checked first, so an
    offline machine fails within about :data:`HUB_TIMEOUT_S` seconds; in the offline mode of
    ``datasets`` (``datasets.config.HF_HUB_OFFLINE``: ``HF_DATASETS_OFFLINE=1``, else
    ``HF_HUB_OFFLINE``, read when ``datasets`` is imported) the check is skipped and the local
    cache is read.

    Raises:
        CorpusError: no network (names the offline corpus ``corpus=pydoc``); the ``datasets``
            package is missing; the dataset cannot be opened or has no ``hf_text_field``.
    """
    if not name:
        raise CorpusError("corpus.kind=hf_dataset needs corpus.hf_dataset (e.g. monology/pile-uncopyrighted)")
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is None or not datasets.config.HF_HUB_OFFLINE:
        if reachable is None:
            from successor_heads.core.hub import hub_reachable

            def reachable() -> bool:
                return hub_reachable(HUB_TIMEOUT_S)
        if not reachable():
            raise CorpusError(
                f"corpus {name!r} is a Hugging Face dataset but the hub is not reachable (no network); "
                f"{OFFLINE_HINT} (or set HF_DATASETS_OFFLINE=1 to read a local datasets cache)"
            )
    if datasets is None:
        raise CorpusError(f"corpus.kind=hf_dataset needs the `datasets` package (pip install -e '.[corpus]'); {OFFLINE_HINT}")
    try:
        stream = datasets.load_dataset(name, split=split, streaming=True)
        texts, n = [], 0
        for row in stream:
            if field_name not in row:
                raise CorpusError(
                    f"dataset {name!r} has no field {field_name!r} (fields: {sorted(row)}); set corpus.hf_text_field")
            texts.append(str(row[field_name]))
            n += count_tokens(texts[-1])
            if n >= n_tokens_needed:
                break
    except CorpusError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; report them all clearly
        raise CorpusError(f"cannot stream dataset {name!r} split {split!r}: {e}; {OFFLINE_HINT}") from e
    return texts, f"{name} ({split}, first {len(texts)} documents, streamed)"


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cut_contexts(tokenizer, texts: list[str], n_contexts: int, context_len: int, prepend_bos: bool = True,
                 progress: bool = False) -> tuple[torch.Tensor, bool, int, int, list[int]]:
    """Tokenise ``texts`` and cut ``n_contexts`` contexts of ``context_len`` tokens (module docstring).

    Returns:
        ``(tokens [n_contexts, context_len] int64, has_bos, n_corpus_tokens, n_windows,
        window_index)`` where ``window_index`` says which window of the stream each context is.

    Raises:
        CorpusError: ``n_contexts < 1`` or ``context_len < 2``; the corpus has fewer than
            ``n_contexts`` windows (the message gives how many fit and what to lower).
    """
    from tqdm.auto import tqdm

    if n_contexts < 1 or context_len < 2:
        raise CorpusError(f"corpus.n_contexts={n_contexts} and corpus.context_len={context_len}: need >= 1 and >= 2")
    bos = getattr(tokenizer, "bos_token_id", None) if prepend_bos else None
    has_bos = bos is not None
    sep = getattr(tokenizer, "eos_token_id", None)
    sep_ids = [sep] if sep is not None else _encode(tokenizer, "\n\n")
    stream: list[int] = []
    for i, text in enumerate(tqdm(texts, desc="tokenising corpus", disable=not progress)):
        if i:
            stream += sep_ids
        stream += _encode(tokenizer, text)
    width = context_len - 1 if has_bos else context_len
    n_windows = len(stream) // width
    if n_windows < n_contexts:
        raise CorpusError(
            f"corpus too short: {len(stream)} tokens give {n_windows} context(s) of {context_len} tokens, "
            f"but corpus.n_contexts={n_contexts}; lower corpus.n_contexts or corpus.context_len, or add text"
        )
    index = [(k * n_windows) // n_contexts for k in range(n_contexts)]
    rows = [([bos] if has_bos else []) + stream[w * width:(w + 1) * width] for w in index]
    import torch

    return torch.tensor(rows, dtype=torch.long), has_bos, len(stream), n_windows, index


def load_corpus(tokenizer, *, kind: str = "pydoc", name: str | None = None, glob: str | None = None,
                hf_dataset: str | None = None, hf_split: str = "train", hf_text_field: str = "text",
                n_contexts: int = 16, context_len: int = 128, prepend_bos: bool = True, progress: bool = False,
                reachable: Callable[[], bool] | None = None) -> Corpus:
    """Load a corpus of ``kind`` (the keys of :class:`CorpusConfig`, which a stage unpacks here)
    and cut it into ``n_contexts`` contexts of ``context_len`` tokens for ``tokenizer``.

    Returns: a :class:`Corpus` with ``tokens [n_contexts, context_len]``.

    Raises:
        CorpusError: unknown kind; empty glob; unreadable file; no network for a hub dataset
            (within seconds, naming ``corpus=pydoc``); corpus too short for the request.
    """
    name = name or kind
    if kind == "pydoc":
        texts, desc = pydoc_texts()
    elif kind == "files":
        texts, desc = file_texts(glob)
    elif kind == "hf_dataset":
        need = int(n_contexts * context_len * 1.1) + 1
        texts, desc = hf_texts(hf_dataset, need, lambda s: len(_encode(tokenizer, s)), reachable,
                               split=hf_split, field_name=hf_text_field)
    else:
        raise CorpusError(f"corpus.kind={kind!r}: must be one of pydoc, files, hf_dataset")
    tokens, has_bos, n_tok, n_win, index = cut_contexts(tokenizer, texts, n_contexts, context_len, prepend_bos, progress)
    log.info("corpus %s: %d contexts x %d tokens from %s (%d tokens, %d windows)",
             name, n_contexts, context_len, desc, n_tok, n_win)
    return Corpus(str(name), tokens, has_bos, desc, len(texts), n_tok, n_win, index)

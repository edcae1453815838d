"""Corpora: the offline default, local files, the hub dataset without a network, and clear
errors (empty glob, unreadable file, no network, corpus too short)."""

from pathlib import Path

import pytest
import torch

from successor_heads.core import corpus as corpus_mod
from successor_heads.core.corpus import CorpusError, cut_contexts, load_corpus

PYDOC = {"name": "pydoc", "kind": "pydoc", "n_contexts": 4, "context_len": 32}


def test_pydoc_contexts_shape_bos_and_determinism(tokenizer):
    c = load_corpus(tokenizer, **PYDOC)
    assert c.tokens.shape == (4, 32) and c.tokens.dtype == torch.long
    assert c.has_bos and (c.tokens[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(c.tokens, load_corpus(tokenizer, **PYDOC).tokens)
    assert len({tuple(r.tolist()) for r in c.tokens}) == 4
    # windows are spread over the whole corpus, not its first pages
    assert c.window_index[0] == 0 and c.window_index[-1] >= c.n_windows * 3 // 4 - 1
    assert "pydoc_data.topics" in c.description


def test_cut_contexts_without_bos_and_even_spacing(tokenizer):
    text = " ".join(str(i) for i in range(300))
    tokens, has_bos, n_tok, n_win, index = cut_contexts(tokenizer, [text], 3, 10, prepend_bos=False)
    assert not has_bos and tokens.shape == (3, 10)
    stream = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert n_tok == len(stream) and n_win == len(stream) // 10
    for row, w in zip(tokens, index):
        assert row.tolist() == stream[w * 10:(w + 1) * 10]


def test_files_corpus(tmp_path, tokenizer):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    c = load_corpus(tokenizer, **{"kind": "files", "glob": str(tmp_path / "*.txt"), "n_contexts": 3, "context_len": 16})
    assert c.tokens.shape == (3, 16) and c.n_documents == 3


def test_empty_glob_is_a_clear_error(tmp_path, tokenizer):
    pattern = str(tmp_path / "nothing" / "*.txt")
    with pytest.raises(CorpusError, match=r"matched no files.*corpus=pydoc"):
        load_corpus(tokenizer, **{"kind": "files", "glob": pattern})
    with pytest.raises(CorpusError, match="needs corpus.glob"):
        load_corpus(tokenizer, **{"kind": "files", "glob": None})


def test_unreadable_file_is_named(tmp_path, tokenizer, monkeypatch):
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_text("hello " * 100)
    bad.write_text("secret")
    real = Path.read_text

    def read_text(self, *a, **kw):
        if self == bad:
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(CorpusError, match=r"b\.txt cannot be read.*Permission denied"):
        load_corpus(tokenizer, **{"kind": "files", "glob": str(tmp_path / "*.txt")})


def test_binary_file_is_named(tmp_path, tokenizer):
    (tmp_path / "x.txt").write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(CorpusError, match=r"x\.txt is not UTF-8"):
        load_corpus(tokenizer, **{"kind": "files", "glob": str(tmp_path / "*.txt")})


def test_hub_dataset_without_network_fails_fast(tokenizer, monkeypatch):
    try:  # datasets reads HF_DATASETS_OFFLINE when it is imported: its flag as without it
        import datasets

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    except ImportError:
        pass
    import successor_heads.core.hub as models

    calls = []
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: calls.append(timeout) or False)
    cfg = {"kind": "hf_dataset", "hf_dataset": "monology/pile-uncopyrighted", "n_contexts": 2, "context_len": 16}
    with pytest.raises(CorpusError, match=r"not reachable.*corpus=pydoc"):
        load_corpus(tokenizer, **cfg)
    assert calls and max(calls) <= 5  # one short reachability probe decides, before any streaming
    with pytest.raises(CorpusError, match="corpus=pydoc"):
        load_corpus(tokenizer, **cfg, reachable=lambda: False)


def test_datasets_offline_mode_reads_the_cache_without_a_probe(tokenizer, monkeypatch):
    """In the offline mode of ``datasets`` (HF_DATASETS_OFFLINE=1 when it was imported) no
    reachability probe runs: the local cache is asked, and a dataset not in it is named."""
    datasets = pytest.importorskip("datasets")  # the offline mode is the datasets package's
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    calls = []
    cfg = {"kind": "hf_dataset", "hf_dataset": "no-such-org/no-such-dataset", "n_contexts": 2, "context_len": 16}
    with pytest.raises(CorpusError, match="no-such-org/no-such-dataset"):
        load_corpus(tokenizer, **cfg, reachable=lambda: calls.append(1) or True)
    assert calls == []


def test_corpus_too_short(tmp_path, tokenizer):
    (tmp_path / "short.txt").write_text("one two three four five six seven")
    cfg = {"kind": "files", "glob": str(tmp_path / "*.txt"), "n_contexts": 5, "context_len": 64}
    with pytest.raises(CorpusError, match=r"corpus too short.*0 context\(s\).*n_contexts=5"):
        load_corpus(tokenizer, **cfg)
    with pytest.raises(CorpusError, match="need >= 1 and >= 2"):
        load_corpus(tokenizer, **{**cfg, "context_len": 1})


def test_unknown_kind(tokenizer):
    with pytest.raises(CorpusError, match="pydoc, files, hf_dataset"):
        load_corpus(tokenizer, **{"kind": "web"})


def test_config_group_composes():
    from successor_heads.config import compose

    cfg = compose("smollm2-135m")
    assert cfg.corpus.kind == "pydoc" and (cfg.corpus.n_contexts, cfg.corpus.context_len) == (16, 128)
    cfg = compose("smollm2-135m", ["corpus=pile"])
    assert cfg.corpus.kind == "hf_dataset" and cfg.corpus.context_len == 512
    cfg = compose("smollm2-135m", ["corpus=files", "corpus.glob=/tmp/*.txt"])
    assert cfg.corpus.glob == "/tmp/*.txt"
    assert corpus_mod.OFFLINE_HINT.startswith("use the offline corpus")


def test_corpus_config_checks_kind_bounds_and_needed_keys():
    """The ``corpus`` section's dataclass rejects what load_corpus would, naming the key, when
    the run is composed."""
    from successor_heads.core.config import ConfigError
    from successor_heads.core.corpus import CorpusConfig

    with pytest.raises(ConfigError, match="corpus.kind='web': must be one of pydoc, files, hf_dataset"):
        CorpusConfig(kind="web")
    with pytest.raises(ConfigError, match="corpus.context_len=1: must be >= 2"):
        CorpusConfig(context_len=1)
    with pytest.raises(ConfigError, match="corpus.kind=files needs corpus.glob"):
        CorpusConfig(kind="files")

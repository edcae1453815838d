"""Tests for successor_heads.core.loading: the one reader of the models stage's folder
(docs/DESIGN.md, "Models without a network")."""

from __future__ import annotations

import json

import pytest
import torch

from successor_heads.core import adapters
from successor_heads.core.loading import LoadedModel, ModelFetchError, load_model, open_model, read_manifest
from tests.support.tiny import FAMILIES, HYBRID, make_model, make_tokenizer, save_tiny_model

MANIFEST = {"model": "tiny", "family": "llama", "source_kind": "local", "n_params": 1}


def _model_folder(root, family: str = "llama"):
    """A tiny saved model with a manifest, as the models stage leaves ``results/tiny/model``."""
    folder = save_tiny_model(family, root / "results" / "tiny" / "model")
    (folder / "manifest.json").write_text(json.dumps({**MANIFEST, "family": family}))
    return folder


@pytest.mark.parametrize("family", HYBRID)
def test_opening_a_hybrid_says_which_layers_are_scored(tmp_path, family, caplog):
    """A hybrid (LFM2, Jamba) is opened with one notice naming its attention layers, which the
    manifest carries into every output's provenance."""
    with caplog.at_level("WARNING", logger="successor_heads.core.loading"):
        loaded = open_model(_model_folder(tmp_path, family))
    notices = [r.getMessage() for r in caplog.records if "hybrid" in r.getMessage()]
    assert notices == [f"{family} is a hybrid: only its 2 attention layers are scored (of 4 decoder layers); "
                       "layer k means decoder layer attention_layers[k], attention_layers=[1, 3]"]
    assert loaded.manifest["attention_layers"] == [1, 3] == list(loaded.adapter.attention_layers)


@pytest.mark.parametrize("family", FAMILIES)
def test_open_model_gives_model_tokenizer_adapter_manifest(tmp_path, family):
    folder = _model_folder(tmp_path, family)
    loaded = open_model(folder)
    assert isinstance(loaded, LoadedModel)
    model, tok, adapter, manifest = loaded  # unpacks in field order
    assert (model, tok, adapter, manifest) == (loaded.model, loaded.tokenizer, loaded.adapter, loaded.manifest)
    # the manifest as stored, plus how the model is held (open_model's default: in memory)
    # (and, for a hybrid, the decoder-layer index of each scored layer)
    hybrid = {"attention_layers": list(adapter.attention_layers)} if adapter.is_hybrid else {}
    assert manifest == {**read_manifest(folder), "memory": "in_memory", **hybrid}
    assert adapter.is_hybrid == (family in HYBRID)
    assert read_manifest(folder) == {**MANIFEST, "family": family}
    assert isinstance(adapter, adapters.Adapter) and adapter.model is model
    assert adapter.dims == adapters.get_adapter(model).dims
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).dtype == torch.float32
    assert adapter.W_E.shape == (adapter.dims.d_vocab, adapter.dims.d_model)

    # the same weights and tokenizer as load_model, and the weights of the model that was saved
    ref_model, ref_tok = load_model(folder)
    ids = tok("Monday Tuesday Wednesday 1 2 3", return_tensors="pt").input_ids
    assert torch.equal(ids, ref_tok("Monday Tuesday Wednesday 1 2 3", return_tensors="pt").input_ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref_model(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(model(ids).logits, make_model(family)[0](ids).logits, rtol=0, atol=1e-6)


def test_open_model_dtype(tmp_path):
    folder = _model_folder(tmp_path)
    loaded = open_model(folder, dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.adapter.W_E.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='int8': must be one of float32, float16, bfloat16"):
        open_model(folder, dtype="int8")


def test_open_model_without_adapter_names_the_families(tmp_path):
    """A transformers family the package has no adapter for (BioGPT) fails naming the supported ones."""
    from transformers import BioGptConfig, BioGptForCausalLM

    tok = make_tokenizer()
    cfg = BioGptConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64)
    folder = tmp_path / "results" / "biogpt" / "model"
    BioGptForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "manifest.json").write_text(json.dumps(MANIFEST))
    with pytest.raises(ValueError, match="no adapter for model_type='biogpt'; supported: .*gpt2.*opt"):
        open_model(folder)


def test_missing_folder_or_manifest_says_how_to_fetch(tmp_path):
    missing = tmp_path / "results" / "smollm2-135m" / "model"
    for load in (open_model, load_model):
        with pytest.raises(ModelFetchError) as e:
            load(missing)
        msg = str(e.value)
        assert "snakemake results/smollm2-135m/model/manifest.json" in msg
        assert "successor-heads fetch model=smollm2-135m" in msg
    missing.mkdir(parents=True)
    (missing / "config.json").write_text("{}")  # looks like a model, but never finished
    for load in (open_model, load_model, read_manifest):
        with pytest.raises(ModelFetchError, match="manifest.json in the folder .* is missing"):
            load(missing)
    (missing / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFetchError, match=r"cannot read .*manifest\.json.*fetch model=smollm2-135m"):
        open_model(missing)

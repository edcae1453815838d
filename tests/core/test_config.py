"""Config tree: every model file composes; unknown models and keys fail with clear errors."""

import pytest

from successor_heads.core.config import ConfigError, available_models, compose, resolve_for_workflow


def test_every_model_composes():
    names = available_models()
    for required in ("gpt2-small", "pythia-1.4b", "llama-2-7b", "smollm2-135m", "gemma3-270m"):
        assert required in names
    for name in names:
        cfg = compose(name)
        assert cfg.model.name == name
        assert cfg.model.source.kind in ("hf", "pypi_wheel", "local")
        if cfg.model.source.kind == "hf":
            assert cfg.model.source.revision, f"{name}: hf source needs a pinned revision"
        assert cfg.model.resources.mem_mb > 0


def test_default_zoo_is_offline():
    cfg = compose()
    assert list(cfg.zoo) == ["smollm2-135m", "gemma3-270m"]
    assert all(compose(m).model.source.kind == "pypi_wheel" for m in cfg.zoo)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'gpt5'.*smollm2-135m"):
        compose("gpt5")


def test_bad_key_is_named():
    with pytest.raises(ConfigError, match="scores.nrms"):
        compose("smollm2-135m", ["scores.nrms=applied"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="scores.norms"):
        compose("smollm2-135m", ["scores.norms=folded"])
    with pytest.raises(ConfigError, match="default_mode"):
        compose("smollm2-135m", ["scores.default_mode=mlp0", "scores.modes=[resid]"])


def test_bad_key_in_a_model_file_is_named(tmp_path):
    import shutil

    cdir = tmp_path / "config"
    shutil.copytree(available_models.__globals__["find_config_dir"](), cdir)
    (cdir / "model" / "broken.yaml").write_text("name: broken\nfamily: llama\nsorce: {kind: local}\n")
    with pytest.raises(ConfigError, match="sorce"):
        compose("broken", config_dir=cdir)


def test_resolved_config_is_rewritten_only_on_change(tmp_path):
    out = tmp_path / "results"
    resolve_for_workflow(["smollm2-135m"], [], out)
    f = out / "smollm2-135m" / "config" / "scores.yaml"
    g = out / "smollm2-135m" / "config" / "wild.yaml"
    m1, w1 = f.stat().st_mtime_ns, g.stat().st_mtime_ns
    resolve_for_workflow(["smollm2-135m"], [], out)
    assert f.stat().st_mtime_ns == m1
    resolve_for_workflow(["smollm2-135m"], ["wild.batch_size=3"], out)
    assert g.stat().st_mtime_ns != w1, "wild config changed: its stage must rerun"
    assert f.stat().st_mtime_ns == m1, "scores does not depend on wild.batch_size"
    assert "batch_size: 3" in g.read_text()


def test_behaviour_top_k_comes_from_the_model_file_and_can_be_overridden():
    assert compose("smollm2-135m").behaviour.top_k == 0
    assert compose("qwen2.5-coder-1.5b").behaviour.top_k == 16
    assert compose("qwen2.5-coder-1.5b", ["behaviour.top_k=0"]).behaviour.top_k == 0


def test_negative_behaviour_top_k_is_named():
    with pytest.raises(ConfigError, match=r"behaviour.top_k=-1"):
        compose("smollm2-135m", ["behaviour.top_k=-1"])

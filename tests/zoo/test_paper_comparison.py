"""The paper-beside-ours table: cells come from the stage summaries; missing inputs are named."""

import json

import pytest

from pathlib import Path

from successor_heads.core import layout
from successor_heads.zoo.paper_comparison import NOT_RUN, run, summaries, table

SCORES = {"model": "m", "default_mode": "resid", "top_head_resid": "L3H1", "top_score_resid": 0.4,
          "top_head_mlp0": "L2H0", "top_score_mlp0": 0.25, "top_over_runner_up_resid": 2.5,
          "n_above_threshold_resid": 0, "agrees_resid": True, "top_behaviour_head": "L3H1", "chance_level": 0.0943}
WILD = {"corpus": "pydoc", "n_contexts": 16, "context_len": 128, "successor_head": "L3H1",
        "category_shares_loss": {"acronym": 0.0, "greater-than": 0.125}, "listing_wins_loss": 33,
        "n_listing_prompts": 64}


def _write(root, model, stage, obj):
    p = Path(layout.outputs(stage, root, model)["summary"])
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def _table(root, models, stages):
    return table(summaries(root, models, stages), models)


def test_cells_come_from_the_summaries(tmp_path):
    _write(tmp_path, "m", "scores", SCORES)
    _write(tmp_path, "m", "wild", WILD)
    df = _table(tmp_path, ["m"], ["scores", "wild"]).set_index("quantity")
    assert df.loc["top successor head (resid, default mode)", "m"] == "L3H1 (0.40)"
    assert df.loc["top successor head (mlp0, the paper's effective embedding)", "m"] == "L2H0 (0.25)"
    assert df.loc["top score / runner-up (resid)", "m"] == "2.5"
    assert df.loc["chance level (a head that always picks one task token; ours)", "m"] == "0.094"
    assert df.loc["numbered listings won by the successor head", "m"] == "33/64"
    assert df.loc["numbered listings won by the successor head", "paper"] == "64/64"
    assert df.loc["greater-than share of its winning tokens", "m"] == "0.12"
    not_run = df[df.section.isin(["features", "editing"])]
    assert len(not_run) == 2 and (not_run.m == NOT_RUN).all()


def test_missing_summary_is_named(tmp_path):
    _write(tmp_path, "m", "scores", SCORES)
    with pytest.raises(FileNotFoundError, match=r"wild_summary.json: missing; run the wild stage for m"):
        _table(tmp_path, ["m"], ["scores", "wild"])


@pytest.mark.parametrize("stages", [["wild"], ["scores", "plots"]])
def test_bad_stages(tmp_path, stages):
    with pytest.raises(ValueError, match="need 'scores'"):
        summaries(tmp_path, ["m"], stages)
    with pytest.raises(ValueError, match="need 'scores'"):
        table({s: [tmp_path / "x.json"] for s in stages}, ["m"])


def test_run_writes_csv_and_html_atomically(tmp_path):
    _write(tmp_path, "m", "scores", SCORES)
    df = run(summaries(tmp_path, ["m"], ["scores"]), ["m"], tmp_path / "t.csv", tmp_path / "t.html")
    assert (tmp_path / "t.csv").read_text().startswith("section,quantity,paper,m")
    html = (tmp_path / "t.html").read_text()
    assert html.count("<tr>") == len(df) + 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_rows_stay_in_their_section_and_checked_heads_are_said(tmp_path):
    """A row only the second model has (mod 7) stays among the features rows; a top-k
    behavioural check says how many heads it ablated; a runner-up at 0 gives n/a."""
    top_k = dict(SCORES, model="n", behaviour_heads_checked="32 of 336 heads (top-k by score per mode)",
                 top_over_runner_up_resid=None)
    _write(tmp_path, "m", "scores", SCORES)
    _write(tmp_path, "n", "scores", top_k)
    _write(tmp_path, "m", "features", {"moduli": {"10": {"coverage_mean": 0.2}}})
    _write(tmp_path, "n", "features",
           {"moduli": {"10": {"coverage_mean": 0.1}, "7": {"probe_sae_cosine_mean": 0.3}}})
    df = _table(tmp_path, ["m", "n"], ["scores", "features"])
    sections = [s for s in df.section if s in ("scores", "features")]
    assert sections == sorted(sections, key=["scores", "features"].index)
    mod7 = df.set_index("quantity").loc["probe vs SAE cosine, mod 7 (days)"]
    assert mod7.m == "n/a" and mod7.n == "0.30"
    agree = df.set_index("quantity").loc["top behavioural head agrees (our check)"]
    assert agree.m == "yes (L3H1)" and "32 of 336 heads" in agree.n
    assert df.set_index("quantity").loc["top score / runner-up (resid)", "n"] == "n/a (runner-up scores 0)"


def test_editing_rows_are_like_for_like_and_health_rows_are_ours(tmp_path):
    """Months and days beside the paper use mod-10 features; mod 7/12 rows are labelled ours,
    past the paper; the SAE dead fraction and probe convergence are our numbers (no paper value)."""
    editing = {"scale": 1.0, "paper": {"numbers_20_29": 0.89, "months": 0.53, "days": "fails"},
               "beside_paper": {"numbers_20_29": {"sae": 0.9, "probe": 0.8, "paper": 0.89, "modulus": 10},
                                "months": {"sae": 0.5, "probe": 0.25, "paper": 0.53, "modulus": 10},
                                "days": {"sae": 0.0, "probe": 0.1, "paper": "fails", "modulus": 10}},
               "ours_past_paper": {"months_mod12": {"sae": 0.75, "probe": 0.5, "modulus": 12},
                                   "days_mod7": {"sae": 1.0, "probe": 1.0, "modulus": 7}}}
    features = {"moduli": {"10": {"coverage_mean": 0.2}}, "dead_fraction": [0.25, 0.5],
                "dead_fraction_mean": 0.375, "probe_n_fits": 12, "probe_n_not_converged": 1}
    _write(tmp_path, "m", "scores", SCORES)
    _write(tmp_path, "m", "editing", editing)
    _write(tmp_path, "m", "features", features)
    df = _table(tmp_path, ["m"], ["scores", "features", "editing"]).set_index("quantity")
    months = df.loc["vector arithmetic success, months, mod-10 features (scale 1.0)"]
    assert months.paper == "53%" and months.m == "sae 0.50; probe 0.25"
    assert df.loc["vector arithmetic success, days, mod-10 features (scale 1.0)", "paper"] == "fails"
    past = df.loc["vector arithmetic success, months, mod-12 features (ours, past the paper; scale 1.0)"]
    assert past.paper.startswith("not studied") and past.m == "sae 0.75; probe 0.50"
    assert "vector arithmetic success, days, mod-7 features (ours, past the paper; scale 1.0)" in df.index
    dead = df.loc["SAE dead features on validation rows: mean fraction (per SAE) (our check)"]
    assert dead.paper == "not reported" and dead.m == "0.38 (0.25, 0.50)"
    assert df.loc["probe fits not converged (our check)", "m"] == "1/12"
    # an older editing summary (no modulus recorded) says so instead of claiming mod 10
    old = {"scale": 1.0, "paper": {"months": 0.53}, "beside_paper": {"months": {"sae": 0.4, "paper": 0.53}}}
    _write(tmp_path, "m", "editing", old)
    df = _table(tmp_path, ["m"], ["scores", "editing"]).set_index("quantity")
    assert df.loc["vector arithmetic success, months, modulus not recorded (scale 1.0)", "m"] == "sae 0.40"

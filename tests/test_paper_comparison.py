"""The paper-beside-ours table: cells come from the stage summaries; missing inputs are named."""

import json

import pytest

from successor_heads.paper_comparison import NOT_RUN, run, table

SCORES = {"model": "m", "default_mode": "resid", "top_head_resid": "L3H1", "top_score_resid": 0.4,
          "top_head_mlp0": "L2H0", "top_score_mlp0": 0.25, "top_over_runner_up_resid": 2.5,
          "n_above_threshold_resid": 0, "agrees_resid": True, "top_behaviour_head": "L3H1"}
WILD = {"corpus": "pydoc", "n_contexts": 16, "context_len": 128, "successor_head": "L3H1",
        "category_shares_loss": {"acronym": 0.0, "greater-than": 0.125}, "listing_wins_loss": 33,
        "n_listing_prompts": 64}


def _write(root, model, rel, obj):
    p = root / model / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


def test_cells_come_from_the_summaries(tmp_path):
    _write(tmp_path, "m", "scores_summary.json", SCORES)
    _write(tmp_path, "m", "wild/wild_summary.json", WILD)
    df = table(tmp_path, ["m"], ["scores", "wild"]).set_index("quantity")
    assert df.loc["top successor head (resid, default mode)", "m"] == "L3H1 (0.40)"
    assert df.loc["top successor head (mlp0, the paper's effective embedding)", "m"] == "L2H0 (0.25)"
    assert df.loc["top score / runner-up (resid)", "m"] == "2.5"
    assert df.loc["numbered listings won by the successor head", "m"] == "33/64"
    assert df.loc["numbered listings won by the successor head", "paper"] == "64/64"
    assert df.loc["greater-than share of its winning tokens", "m"] == "0.12"
    not_run = df[df.section.isin(["features", "editing"])]
    assert len(not_run) == 2 and (not_run.m == NOT_RUN).all()


def test_missing_summary_is_named(tmp_path):
    _write(tmp_path, "m", "scores_summary.json", SCORES)
    with pytest.raises(FileNotFoundError, match=r"wild_summary.json: missing; run the wild stage for m"):
        table(tmp_path, ["m"], ["scores", "wild"])


@pytest.mark.parametrize("stages", [["wild"], ["scores", "plots"]])
def test_bad_stages(tmp_path, stages):
    with pytest.raises(ValueError, match="need 'scores'"):
        table(tmp_path, ["m"], stages)


def test_run_writes_csv_and_html_atomically(tmp_path):
    _write(tmp_path, "m", "scores_summary.json", SCORES)
    df = run(tmp_path, ["m"], ["scores"], tmp_path / "t.csv", tmp_path / "t.html")
    assert (tmp_path / "t.csv").read_text().startswith("section,quantity,paper,m")
    html = (tmp_path / "t.html").read_text()
    assert html.count("<tr>") == len(df) + 1
    assert not list(tmp_path.glob(".*tmp*"))

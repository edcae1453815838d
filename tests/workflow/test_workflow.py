"""The DAG end to end on a tiny local model, in a temporary folder."""

import json

import pandas as pd
import pytest

from tests.support.workflow_project import make_project, snakemake


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = make_project(tmp_path_factory.mktemp("dag"))
    snakemake(tmp)
    return tmp


def test_scores_outputs(project):
    r = project / "results" / "tiny-llama"
    for f in ("successor_scores.h5", "successor_scores.csv", "tasks.csv", "successor_heatmap.png",
              "top_head_tasks.png", "scores_summary.json", "config.yaml", "model/manifest.json"):
        assert (r / f).is_file(), f
    df = pd.read_csv(r / "successor_scores.csv")
    assert list(df.columns[:3]) == ["layer", "head", "successor_score"]
    assert "behaviour_logprob_drop" in df.columns and "successor_score_mlp0" in df.columns
    assert df.successor_score.is_monotonic_decreasing
    assert len(df) == 2 * 4
    s = json.loads((r / "scores_summary.json").read_text())
    assert s["default_mode"] == "resid"
    zoo = pd.read_csv(project / "results" / "zoo" / "successor_heads.csv")
    assert list(zoo.model) == ["tiny-llama"]
    assert (project / "results" / "zoo" / "max_score_vs_params.png").stat().st_size > 1000


def test_rerun_does_nothing(project):
    proc = snakemake(project, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_config_change_reruns_only_affected_stage(project):
    proc = snakemake(project, "-n", overrides=[*__import__("tests.support.workflow_project", fromlist=["x"]).TINY_OVERRIDES, "scores.threshold=0.6"])
    out = proc.stdout + proc.stderr
    assert "successor_scores" in out and "fetch_model" not in out
    # a dry run must leave the stored config as the finished run wrote it
    snakemake(project, "-n")


def test_unknown_model_fails_clearly(project):
    proc = snakemake(project, "-n", models=("nope",), check=False)
    assert proc.returncode != 0
    assert "unknown model 'nope'" in proc.stdout + proc.stderr


def test_paper_table_beside_ours(project):
    zoo = project / "results" / "zoo"
    df = pd.read_csv(zoo / "paper_vs_ours.csv")
    assert list(df.columns) == ["section", "quantity", "paper", "tiny-llama"]
    assert set(df.section) == {"scores", "features", "editing", "wild"}
    cov = df[df.quantity == "mod-10 modal SAE feature coverage"].iloc[0]
    assert cov.paper == "0.585"
    f = json.loads((project / "results" / "tiny-llama" / "features" / "features_summary.json").read_text())
    assert float(cov["tiny-llama"]) == pytest.approx(f["moduli"]["10"]["coverage_mean"], abs=0.005)
    html = (zoo / "paper_vs_ours.html").read_text()
    assert "<table>" in html and "tiny-llama" in html and "94/102" in html


@pytest.fixture(scope="module")
def report_html(project):
    snakemake(project, "--report", "report.html")
    return project / "report.html"


def test_report_holds_every_figure(report_html):
    """``snakemake --report`` makes one self-contained HTML file with every report item."""
    page = report_html.read_text()
    assert len(page) > 100_000
    for name in ("successor_heatmap.png", "top_head_tasks.png", "max_score_vs_params.png",
                 "top_heads_per_task.png", "paper_vs_ours.html", "category_shares.png"):
        assert name in page, name


def test_report_shows_every_figure_in_a_browser(report_html, tmp_path):
    """Headless Chromium opens the report, clicks every item and sees each figure decode and
    the paper table render. Needs playwright (extra ``browser``) and a Chromium binary; with
    CI=true their absence fails instead of skipping."""
    import os

    from tests.support.report_browser import find_chromium

    chromium = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        chromium = None
    if not chromium:
        msg = "needs playwright (pip install -e '.[browser]') and Chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from tests.support.report_browser import screenshot_report

    items = screenshot_report(report_html, tmp_path / "shots", chromium)
    shown = {it["item"].rsplit("/", 1)[-1]: it for it in items}
    for name in ("successor_heatmap.png", "top_head_tasks.png", "feature_activations.png", "probe_confusion.png",
                 "probe_sae_cosine.png", "scale_sweep.png", "greater_than.png", "loss_increase_heatmap.png",
                 "category_shares.png", "max_score_vs_params.png", "top_heads_per_task.png", "paper_vs_ours.html"):
        assert name in shown, f"{name} not listed in the report"
        assert shown[name]["ok"], f"{name} listed but not shown"
    assert all(it["ok"] for it in items)
    assert (tmp_path / "shots" / "00_landing.png").stat().st_size > 10_000

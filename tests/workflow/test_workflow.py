"""The DAG end to end on a tiny local model, in a temporary folder."""

import json
from pathlib import Path

import pandas as pd
import pytest

from successor_heads.core import layout
from tests.support.workflow_project import make_project, snakemake

pytestmark = pytest.mark.dag


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = make_project(tmp_path_factory.mktemp("dag"))
    snakemake(tmp)
    return tmp


def test_every_output_of_the_layout_exists(project):
    results = project / "results"
    for stage in layout.OUTPUTS:
        for name, path in layout.outputs(stage, results, "tiny-llama").items():
            assert Path(path).is_file(), (stage, name)
        assert Path(layout.log(stage, results, "tiny-llama")).is_file(), stage
    for rule in set(layout.ZOO_OUTPUTS) - {"over_training"}:  # that one: a zoo with a sweep only
        for name, path in layout.zoo_outputs(rule, results, "zoo").items():
            assert Path(path).is_file(), (rule, name)
        assert Path(layout.zoo_log(rule, results, "zoo")).is_file(), rule
    # the config is recorded in each job's log (its params), not written beside the outputs
    assert "config (this job's params): {'model': {'name': 'tiny-llama'" in Path(
        layout.log("scores", results, "tiny-llama")).read_text()
    assert not Path(layout.config_file(results, "tiny-llama")).exists()


def test_scores_outputs(project):
    out = layout.outputs("scores", project / "results", "tiny-llama")
    zoo = layout.zoo_outputs("zoo_table", project / "results", "zoo")
    df = pd.read_csv(out["csv"])
    assert list(df.columns[:3]) == ["layer", "head", "successor_score"]
    assert "behaviour_logprob_drop" in df.columns and "successor_score_mlp0" in df.columns
    assert df.successor_score.is_monotonic_decreasing
    assert len(df) == 2 * 4
    s = json.loads(Path(out["summary"]).read_text())
    assert s["default_mode"] == "resid"
    assert list(pd.read_csv(zoo["csv"]).model) == ["tiny-llama"]
    assert Path(zoo["fig"]).stat().st_size > 1000


def test_rerun_does_nothing(project):
    proc = snakemake(project, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


# What a changed config key reruns (exact plans): tests/workflow/test_plan.py.


def test_unknown_model_fails_clearly(project):
    proc = snakemake(project, "-n", models=("nope",), check=False)
    assert proc.returncode != 0
    assert "unknown model 'nope'" in proc.stdout + proc.stderr


def test_paper_table_beside_ours(project):
    paper = layout.zoo_outputs("paper_table", project / "results", "zoo")
    df = pd.read_csv(paper["csv"])
    assert list(df.columns) == ["section", "quantity", "paper", "tiny-llama"]
    assert set(df.section) == {"scores", "features", "editing", "wild"}
    cov = df[df.quantity == "mod-10 modal SAE feature coverage"].iloc[0]
    assert cov.paper == "0.585"
    f = json.loads(Path(layout.outputs("features", project / "results", "tiny-llama")["summary"]).read_text())
    assert float(cov["tiny-llama"]) == pytest.approx(f["moduli"]["10"]["coverage_mean"], abs=0.005)
    html = Path(paper["html"]).read_text()
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


@pytest.mark.browser
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

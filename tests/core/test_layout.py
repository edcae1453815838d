"""The one layout of paths, and the one successor-head lookup with its one error type."""

import numpy as np
import pytest

from successor_heads.core import layout
from successor_heads.core.h5io import write_h5
from successor_heads.core.handoff import StageInputError, load_top_heads


def test_every_stage_input_is_another_stage_output():
    for stage, ins in layout.INPUTS.items():
        assert stage in layout.OUTPUTS
        for name, (src, key) in ins.items():
            assert key in layout.OUTPUTS[src], (stage, name)
    for stage, names in layout.TARGETS.items():
        assert set(names) <= set(layout.OUTPUTS[stage])


def test_paths_are_snakemake_patterns_or_concrete():
    assert layout.outputs("scores", "results")["h5"] == "results/{model}/successor_scores.h5"
    assert layout.inputs("editing", "r", "m") == {"manifest": "r/m/model/manifest.json",
                                                  "scores": "r/m/successor_scores.h5",
                                                  "directions": "r/m/features/directions.h5"}
    assert layout.log("scores", "r", "m") == "r/logs/m/successor_scores.log"
    assert layout.zoo_outputs("paper_table", "r", "zoo")["html"] == "r/zoo/paper_vs_ours.html"
    assert layout.zoo_log("zoo_table", "r", "z") == "r/logs/z/zoo_table.log"
    assert str(layout.model_dir("r/m/model/manifest.json")) == "r/m/model"
    with pytest.raises(KeyError, match="unknown stage 'plots'"):
        layout.outputs("plots")


def test_no_two_outputs_share_a_path():
    paths = [p for s in layout.OUTPUTS for p in layout.outputs(s, "r", "m").values()]
    paths += [p for r in layout.ZOO_OUTPUTS for p in layout.zoo_outputs(r, "r", "z").values()]
    assert len(paths) == len(set(paths))


def test_successor_head_lookup(tmp_path):
    path = tmp_path / "successor_scores.h5"
    with pytest.raises(StageInputError, match="successor-heads scores model=tiny"):
        load_top_heads(path, model="tiny")
    overall = np.zeros((2, 4), np.float32)
    overall[1, 2], overall[0, 3] = 0.9, 0.5
    write_h5(path, {"overall_resid": overall}, {"default_mode": "resid"})
    assert load_top_heads(path) == [(1, 2)]
    assert load_top_heads(path, 2, "resid") == [(1, 2), (0, 3)]
    with pytest.raises(StageInputError, match=r"wild.score_mode='mlp0': .* has no such mode \(it has \['resid'\]\)"):
        load_top_heads(path, mode="mlp0", option="wild.score_mode")
    assert issubclass(StageInputError, ValueError)

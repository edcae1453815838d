"""Edits inside the real forward pass: the MLP0 hook edits exactly the chosen positions, is a
no-op at scale 0, is removed even when the forward pass raises; the prompt and corpus loss
measurements line up; the editing stage writes its outputs end to end on a tiny model."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from successor_heads.editing import edit_loss as el
from successor_heads.core.adapters import get_adapter
from successor_heads.config import as_dict, build as validate
from successor_heads.core.h5io import read_h5, write_h5
from successor_heads.core.tasks import build_tasks
from tests.support.tiny import FAMILIES, make_model


def _dirs(d_model, seed=0, sources=("sae", "probe")):
    g = torch.Generator().manual_seed(seed)
    return {(s, m): torch.nn.functional.normalize(torch.randn(m, d_model, generator=g), dim=-1)
            for s in sources for m in (10, 7, 12)}


def _capture_mlp0(adapter, ids, norms="raw"):
    got = {}

    def keep(_m, _i, out):
        # a copy of the tensor (Falcon adds the attention output into it in place; gpt-oss's MLP
        # returns (output, router scores)); returns None, as anything else would replace the
        # module's output (Falcon's in-place add would then write into the copy, and gpt-oss's
        # tuple would become one tensor, unpacked along the batch)
        if "out" not in got:
            got["out"] = (out[0] if isinstance(out, tuple) else out).clone()

    h = el.edit_site(adapter, norms).register_forward_hook(keep)
    try:
        logits = adapter.model(input_ids=ids).logits
    finally:
        h.remove()
    return got["out"].reshape(*ids.shape, -1), logits  # (OPT's MLP output is [batch * pos, d_model])


#: Families whose MLP0 edit is not yet shown to be exact (open: the edit stage is not claimed for them).
EDIT_OPEN: dict[str, str] = {}


def test_hook_edits_only_the_chosen_position(tiny_model, request):
    if tiny_model.family in EDIT_OPEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=EDIT_OPEN[tiny_model.family]))
    family, model, tok, a = tiny_model.family, tiny_model.model, tiny_model.tok, tiny_model.adapter
    ids = torch.tensor([tok("Monday, Tuesday, Wednesday, 1 2 3")["input_ids"]] * 2)
    f = _dirs(a.dims.d_model)[("probe", 10)]
    with torch.no_grad():
        base, base_logits = _capture_mlp0(a, ids)
        with el.edit_mlp0(a, [1], [3], f[[2]], f[[5]], scale=2.0):
            edited, logits = _capture_mlp0(a, ids)  # capture hook runs after the edit hook
    diff = edited - base
    a_expected = 2.0 * (base[1, 3] @ f[2]).abs()
    torch.testing.assert_close(diff[1, 3], a_expected * (f[5] - f[2]), atol=1e-5, rtol=1e-4)
    diff[1, 3] = 0
    assert diff.abs().max() == 0
    torch.testing.assert_close(logits[0], base_logits[0])  # the other batch row is untouched
    torch.testing.assert_close(logits[1, :3], base_logits[1, :3])  # causal: earlier positions too
    assert not torch.allclose(logits[1, 3:], base_logits[1, 3:])
    assert len(el.edit_site(a)._forward_hooks) == 0


def test_hook_removed_when_forward_raises(tokenizer):
    model, tok = make_model("llama", tokenizer)
    a = get_adapter(model)
    site = el.edit_site(a)
    f = _dirs(a.dims.d_model)[("sae", 7)]
    ids = torch.tensor([tok("one two three")["input_ids"]])
    # position 999 does not exist: the hook itself raises in the middle of the forward pass
    with pytest.raises(IndexError), el.edit_mlp0(a, [0], [999], f[[0]], f[[1]], 1.0):
        assert len(site._forward_hooks) == 1
        model(input_ids=ids)
    assert len(site._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="boom"), el.edit_mlp0(a, [0], [0], f[[0]], f[[1]], 1.0):
        raise RuntimeError("boom")
    assert len(site._forward_hooks) == 0
    with pytest.raises(ValueError, match="lengths"), el.edit_mlp0(a, [0, 0], [0], f[[0]], f[[1]], 1.0):
        pass
    with pytest.raises(ValueError, match="d_model"), el.edit_mlp0(a, [0], [0], torch.ones(1, 3), torch.ones(1, 3), 1.0):
        pass
    assert len(site._forward_hooks) == 0


def test_gemma_applied_norms_edit_after_post_mlp_norm(tokenizer):
    model, _ = make_model("gemma3", tokenizer)
    a = get_adapter(model)
    assert el.edit_site(a, "applied") is a.mlp_out_norm(0)
    assert el.edit_site(a, "raw") is a.mlp(0)


def test_prompt_edits_line_up(tokenizer):
    model, tok = make_model("qwen2", tokenizer)
    a = get_adapter(model)
    tasks = build_tasks(tok, numbers_max=30, include_roman=False)
    cases = el.prompt_cases(tok, tasks, max_per_family=3, max_targets=2)
    assert {c["family"] for c in cases} >= {"days", "months", "number_words", "letters", "numbers"}
    by = {t.name: t for t in tasks}
    for c in cases:
        t = by[c["task"]]
        assert c["ids"][c["pos"]] == t.token_ids[t.tokens.index(c["item"])]
        assert c["new_id"] != c["target_id"] and c["i"] != c["j"]
        k = t.tokens.index(c["item"])
        assert (t.positions[k] % c["modulus"]) == c["i"]
    dirs = _dirs(a.dims.d_model)
    df0 = el.prompt_edit_loss(a, cases, dirs, scale=0.0)
    assert len(df0) == 2 * len(cases)
    np.testing.assert_allclose(df0.loss_target_after, df0.loss_target_before, atol=1e-5)
    np.testing.assert_allclose(df0.loss_new_after, df0.loss_new_before, atol=1e-5)
    ids = torch.tensor([cases[0]["ids"]])
    with torch.no_grad():
        lp = model(input_ids=ids).logits[0, -1].log_softmax(-1)
    assert df0.loss_target_before.iloc[0] == pytest.approx(-float(lp[cases[0]["target_id"]]), abs=1e-5)
    df = el.prompt_edit_loss(a, cases, dirs, scale=4.0)
    assert (df.loss_new_after - df.loss_new_before).abs().max() > 1e-3
    s = el.summarise_prompts(df)
    assert set(s) == {"sae", "probe"} and s["probe"]["n"] == len(cases)


def test_corpus_edit_loss(tokenizer):
    model, tok = make_model("gpt2", tokenizer)
    a = get_adapter(model)
    tasks = build_tasks(tok, numbers_max=30, include_roman=False)
    text = ("On Monday we counted one two three and then 1 2 3 4 5 in March. The quick brown fox "
            "jumps over the lazy dog, first and second, 12 and 13 on Friday. ") * 3
    ids = tok(text)["input_ids"][:96]
    tokens = torch.tensor([ids[:48], ids[48:96]])
    classes = el.residue_classes(tasks, families=["numbers", "number_words", "days", "months"])
    assert classes[10][tok(" 3", add_special_tokens=False)["input_ids"][0]] == 3
    assert classes[7][tok(" Monday", add_special_tokens=False)["input_ids"][0]] == 1  # Monday = position 1
    dirs = _dirs(a.dims.d_model, sources=("probe",))
    zero = el.corpus_edit_loss(a, tokens, classes, dirs, scale=0.0, batch_size=1)
    assert len(zero) and (zero[["delta_loss_all", "delta_loss_at_edit"]].abs().to_numpy() < 1e-5).all()
    df = el.corpus_edit_loss(a, tokens, classes, dirs, shift=3, scale=4.0, batch_size=1)
    n3 = int(sum(classes[10].get(int(t), -1) == 3 for t in tokens.flatten()))
    assert df[(df.modulus == 10) & (df.i == 3)].n_edits.iloc[0] == n3 > 0
    assert (df.j == (df.i + 3) % df.modulus).all()
    assert df.delta_loss_at_edit.abs().max() > 1e-4
    # computing logits only from the first edit on (earlier losses copied) equals the full pass
    b, p = torch.tensor([0, 0, 1]), torch.tensor([30, 40, 20])
    f = dirs[("probe", 10)]
    edit = (b, p, f[[1, 1, 1]], f[[4, 4, 4]], 3.0, "projection", "raw")
    base = el.token_losses(a, tokens, batch_size=2)
    fast = el.token_losses(a, tokens, 2, edit, base)
    torch.testing.assert_close(fast, el.token_losses(a, tokens, 2, edit), atol=1e-4, rtol=1e-4)
    assert torch.equal(fast[0, :30], base[0, :30]) and not torch.allclose(fast[0, 30:], base[0, 30:])
    s = el.summarise_corpus(df)
    assert s["probe"]["n_edits"] == int(df.n_edits.sum())
    with pytest.raises(ValueError, match="multiple of modulus"):
        el.corpus_edit_loss(a, tokens, classes, dirs, shift=7, scale=1.0)


def test_editing_stage_end_to_end(tmp_path, tokenizer):
    """The stage runner on a tiny local model with a stand-in scores file and directions."""
    from successor_heads.core import layout
    from successor_heads.core.handoff import StageInputError
    from successor_heads.models.fetch import fetch_model
    from successor_heads.editing import stage as editing
    from tests.support.tiny import save_tiny_model

    folder = save_tiny_model("llama", tmp_path / "weights")
    cfg = validate({"model": {"name": "tiny", "family": "llama", "source": {"kind": "local", "path": str(folder)}},
                    "device": "cpu", "corpus": {"n_contexts": 2, "context_len": 32},
                    "tasks": {"numbers_max": 30}, "editing": {"max_prompts_per_family": 2}})
    results = tmp_path / "results"
    ins, outs = layout.inputs("editing", results, "tiny"), layout.outputs("editing", results, "tiny")
    fetch_model(layout.model_dir(ins["manifest"]), **cfg.model.fetch_args())
    for bad, match in (({"scale_ref": "absolute"}, "scale_ref"), ({"corpus_sources": ["probe"], "sources": ["sae"]},
                                                                   "corpus_sources"),
                       ({"paper_modulus": 1}, "paper_modulus")):
        with pytest.raises(ValueError, match=match):  # the typed config refuses it before the stage runs
            editing.run(validate({**as_dict(cfg), "editing": {**as_dict(cfg.editing), **bad}}), ins, outs, progress=False)
    with pytest.raises(StageInputError, match="scores stage"):
        editing.run(cfg, ins, outs, progress=False)
    overall = np.zeros((2, 4))
    overall[1, 2] = 0.9
    write_h5(ins["scores"], {"overall_resid": overall, "overall_mlp0": overall}, {"default_mode": "resid"})
    with pytest.raises(StageInputError, match="features stage"):
        editing.run(cfg, ins, outs, progress=False)
    dirs = {f"{s}_mod{m}": f.numpy() for (s, m), f in _dirs(32).items()}
    dirs["sae_mod12"][3] = np.nan  # a class without tokens
    # the stage reads the directions its caller declares, wherever they are
    elsewhere = tmp_path / "elsewhere" / "directions.h5"
    write_h5(elsewhere, dirs, {"successor_head": "L1H2", "space": "mlp0", "norms": "raw"})
    summary = editing.run(cfg, {**ins, "directions": str(elsewhere)}, outs, progress=False)
    for name, path in outs.items():
        assert Path(path).is_file(), name
    assert not Path(ins["directions"]).exists()
    assert summary["successor_head"] == "L1H2"
    assert summary["quantization"] == "none"
    assert json.loads(Path(outs["summary"]).read_text())["model"] == "tiny"
    # summary keys name the modulus (before editing.paper_modulus: "numbers_20_29", "months")
    va_sum = summary["vector_arithmetic"]["sae"]
    assert "numbers_20_29_mod10" in va_sum
    assert {"months_mod10", "months_mod12", "days_mod10", "days_mod7"} <= set(va_sum)
    assert va_sum["months_mod10"]["modulus"] == 10
    months = summary["beside_paper"]["months"]
    assert months["paper"] == 0.53 and months["modulus"] == 10
    assert months["sae"] == va_sum["months_mod10"]["success_rate"]
    assert {"months_mod12", "days_mod7"} <= set(summary["ours_past_paper"])
    assert "months_mod10" not in summary["ours_past_paper"]
    assert summary["value_bias"] is False and summary["paper_modulus"] == 10
    csv = pd.read_csv(outs["vector_arithmetic"])
    assert set(csv[csv.family == "months"].modulus) == {10, 12}
    table = pd.read_csv(outs["va_summary"])
    assert "modulus" in table.columns
    assert set(summary["greater_than"]) == {"head", "mlp0"}
    data, attrs = read_h5(outs["h5"])
    assert attrs["successor_head"] == "L1H2" and attrs["model"] == "tiny" and attrs["quantization"] == "none"
    assert bool(attrs["value_bias"]) is False and int(attrs["paper_modulus"]) == 10
    assert len(data["vector_arithmetic.success_rate"]) == len(data["vector_arithmetic.source"]) > 0


def test_editing_stage_passes_value_bias_to_every_head_read(tmp_path, tokenizer, monkeypatch):
    """``scores.value_bias: true`` reaches every Adapter.ov call of the stage (vector arithmetic
    and greater-than) and is recorded; the loss measurements run the model, not ov."""
    from successor_heads.core import layout
    from successor_heads.core.adapters import Adapter
    from successor_heads.models.fetch import fetch_model
    from successor_heads.editing import stage as editing
    from tests.support.tiny import save_tiny_model

    folder = save_tiny_model("gpt2", tmp_path / "weights")
    cfg = validate({"model": {"name": "tiny", "family": "gpt2", "source": {"kind": "local", "path": str(folder)}},
                    "device": "cpu", "corpus": {"n_contexts": 1, "context_len": 16},
                    "tasks": {"numbers_max": 12}, "scores": {"value_bias": True},
                    "editing": {"max_prompts_per_family": 1, "scale_sweep": [1.0], "sources": ["sae"],
                                "corpus_families": ["days"]}})
    results = tmp_path / "results"
    ins, outs = layout.inputs("editing", results, "tiny"), layout.outputs("editing", results, "tiny")
    fetch_model(layout.model_dir(ins["manifest"]), **cfg.model.fetch_args())
    overall = np.zeros((2, 4))
    overall[1, 2] = 0.9
    write_h5(ins["scores"], {"overall_resid": overall}, {"default_mode": "resid"})
    dirs = {f"{s}_mod{m}": f.numpy() for (s, m), f in _dirs(32, sources=("sae",)).items()}
    write_h5(ins["directions"], dirs, {"successor_head": "L1H2", "space": "mlp0", "norms": "raw"})
    seen, ov = [], Adapter.ov

    def spy(self, *args, **kw):
        seen.append(kw.get("value_bias"))
        return ov(self, *args, **kw)

    monkeypatch.setattr(Adapter, "ov", spy)
    summary = editing.run(cfg, ins, outs, progress=False)
    assert seen and all(v is True for v in seen)
    assert summary["value_bias"] is True and bool(read_h5(outs["h5"])[1]["value_bias"])

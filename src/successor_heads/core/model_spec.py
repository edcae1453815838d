"""What a zoo entry or ``model=`` value names (docs/DESIGN.md, "Model specs"): a file in
``config/model/`` (``pythia-70m@step1000``: at another hub revision), a hub id
``org/name[@revision]``, a transformers folder or a ``.gguf`` file, and in a zoo a folder of
checkpoints (a sweep). Each model gets a filesystem-safe *slug*: its ``results/<slug>/`` folder
and Snakemake ``{model}`` wildcard.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from successor_heads.core.config import ConfigError

#: Kinds of spec: a model file, a hub repo, a local transformers folder, a local GGUF file.
KINDS = ("name", "hf", "folder", "gguf")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
#: Training step in a revision or folder name, tried in order.
_STEP = (re.compile(r"step[-_]?(\d+)", re.I), re.compile(r"checkpoint[-_]?(\d+)", re.I), re.compile(r"(?:^|[-_])(\d+)$"))
SYNTAX = ("a name in config/model/ (e.g. smollm2-135m, or pythia-70m@step1000), a Hugging Face id "
          "org/name[@revision], a path to a transformers folder (with config.json) or to a .gguf file")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a zoo, as parsed from its entry."""

    value: str  # the entry as written
    kind: str  # one of KINDS
    slug: str  # the results/<slug>/ folder and model.name
    name: str | None = None  # the model file's name (kind name)
    repo_id: str | None = None  # the hub repo (kind hf)
    revision: str | None = None  # kinds name and hf; None: the file's or the default branch
    path: str | None = None  # absolute path (kinds folder and gguf)
    sweep: str | None = None  # the sweep this model is a checkpoint of
    label: str | None = None  # the checkpoint's revision or folder name within its sweep


def safe(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and ``._@+-`` as one ``-``."""
    return _UNSAFE.sub("-", text).strip("-") or "model"


def checkpoint_folders(path: str | os.PathLike) -> list[Path]:
    """The checkpoints in a sweep folder: its subfolders holding ``config.json`` and its
    ``.gguf`` files, by name (an empty list when ``path`` is itself a model folder)."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").is_file():
        return []
    return sorted(c for c in p.iterdir() if (c.is_dir() and (c / "config.json").is_file())
                  or (c.is_file() and c.suffix == ".gguf"))


def parse_model(value: str, known: Sequence[str]) -> ModelSpec:
    """Parse one ``model=`` value or zoo entry (``known``: the names of ``config/model/*.yaml``).

    An existing path is a local model (``./org/name`` reads a folder); then a name in ``known``
    (with an optional ``@revision``); then a hub id. The slug is the name,
    ``<org>--<name>[@<revision>]`` or ``local-<folder or file stem>``.

    Raises:
        ConfigError: a missing path, a folder neither a model nor a folder of checkpoints, a file
            not ``.gguf``, or a value of no known form (listing the known names and the syntax).
    """
    value = str(value).strip()
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    if p.exists() or value.startswith(("/", "./", "../", "~", "$")) or value.endswith(".gguf") or value in (".", ".."):
        if not p.exists():
            raise ConfigError(f"model {value!r}: no such file or folder ({p.resolve()}); {SYNTAX}")
        path = str(p.resolve())
        if p.is_file():
            if p.suffix != ".gguf":
                raise ConfigError(f"model {value!r} is a file but not a .gguf file; {SYNTAX}")
            return ModelSpec(value, "gguf", safe(f"local-{p.stem}"), path=path)
        if not (p / "config.json").is_file() and not checkpoint_folders(p):
            raise ConfigError(f"model {value!r} is a folder without config.json (and without checkpoint "
                              "folders that have one); a model folder is a transformers save_pretrained folder")
        return ModelSpec(value, "folder", safe(f"local-{p.resolve().name}"), path=path)
    if value in known:
        return ModelSpec(value, "name", value, name=value)
    base, _, rev = value.partition("@")
    if base in known and rev:
        return ModelSpec(value, "name", safe(f"{base}@{rev}"), name=base, revision=rev)
    if base.count("/") == 1 and _valid_repo_id(base) and (rev or "@" not in value):
        org, name = base.split("/")
        return ModelSpec(value, "hf", safe(f"{org}--{name}" + (f"@{rev}" if rev else "")), repo_id=base,
                         revision=rev or None)
    raise ConfigError(f"unknown model {value!r}; known models: {', '.join(known)}. A model is {SYNTAX}")


def _valid_repo_id(repo_id: str) -> bool:
    """``org/name`` is a hub id as huggingface_hub's validator accepts it."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return False
    return True


def step_of(label: str) -> int | None:
    """The training step in a revision or folder name (``step1000``, ``checkpoint-500``, a
    trailing number), None when it has none."""
    for pattern in _STEP:
        if m := pattern.search(Path(label).stem if label.endswith(".gguf") else label):
            return int(m.group(1))
    return None


def expand_zoo(entries: Iterable[str], known: Sequence[str]) -> list[ModelSpec]:
    """One spec per model of a zoo (``entries``: any form :func:`parse_model` reads), in zoo
    order, with each sweep's members marked: a folder of checkpoints gives one spec per checkpoint
    (slug ``local-<folder>@<checkpoint>``); entries of one file or hub repo at two or more
    revisions form a sweep named after it. (A model file's ``model.revisions`` is expanded by
    :func:`successor_heads.config.resolve_zoo`, which composes the file.)

    Raises:
        ConfigError: a bad entry (:func:`parse_model`) or two entries with the same slug.
    """
    specs: list[ModelSpec] = []
    for entry in entries:
        spec = parse_model(entry, known)
        ckpts = checkpoint_folders(spec.path) if spec.kind == "folder" else []
        if not ckpts:
            specs.append(spec)
            continue
        sweep = spec.slug
        for c in ckpts:
            specs.append(ModelSpec(str(c), "gguf" if c.is_file() else "folder", safe(f"{sweep}@{c.stem}"),
                                   path=str(c.resolve()), sweep=sweep, label=c.name))
    bases: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        if s.sweep is None and s.revision is not None:
            bases.setdefault(s.name or safe(s.repo_id.replace("/", "--")), []).append(i)
    for base, idx in bases.items():
        if len(idx) > 1:
            for i in idx:
                specs[i] = replace(specs[i], sweep=base, label=specs[i].revision)
    seen: dict[str, str] = {}
    for s in specs:
        if s.slug in seen and seen[s.slug] != s.value:
            raise ConfigError(f"zoo entries {seen[s.slug]!r} and {s.value!r} both map to results/{s.slug}/; "
                              "rename one folder")
        seen[s.slug] = s.value
    return list({s.slug: s for s in specs}.values())


def sweeps(specs: Iterable[ModelSpec]) -> dict[str, list[dict]]:
    """``{sweep: [{"model": slug, "revision": label, "step": int}, ...]}`` of the zoo's specs
    (:func:`expand_zoo`), in step order: the step read from the revision or folder name
    (:func:`step_of`), or, when one checkpoint of a sweep has none, each one's place in zoo order."""
    out: dict[str, list[dict]] = {}
    for s in specs:
        if s.sweep is not None:
            out.setdefault(s.sweep, []).append({"model": s.slug, "revision": s.label})
    for members in out.values():
        steps = [step_of(m["revision"]) for m in members]
        for k, m in enumerate(members):
            m["step"] = k if None in steps else steps[k]
        members.sort(key=lambda m: m["step"])
    return out

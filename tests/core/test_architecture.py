"""The package's shape: import layering (import-linter contracts in pyproject.toml), module
size, and citations in docstrings and comments that resolve inside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "successor_heads"
#: text files whose docstrings and comments may cite the docs or other files
CITING = [*SRC.rglob("*.py"), *(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"),
          *(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"), REPO / "README.md",
          REPO / "Snakefile", REPO / "pyproject.toml", *(REPO / "config").rglob("*.yaml")]
CITING = [p for p in CITING if p != Path(__file__).resolve()]  # this file's patterns are not citations


def test_import_layering_contracts_are_kept():
    """Entry points over stage packages over the shared core; stage packages independent."""
    try:
        import importlinter  # noqa: F401
    except ImportError:
        pytest.fail("import-linter is missing: it is in the test extra, pip install -e '.[test]'")
    # this interpreter, with this checkout's src first: the contracts are checked on this tree
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_no_source_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_design_citations_name_sections_that_exist():
    headings = {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", (REPO / "docs" / "DESIGN.md").read_text(), re.M)}
    bad = []
    for path in CITING:
        text = path.read_text(errors="ignore")
        # docs/DESIGN.md, "Section"  |  docs/DESIGN.md "Section", "Other"  |  docs/DESIGN.md, Section)
        for m in re.finditer(r'docs/DESIGN\.md,?\s*((?:"[^"\n]+"(?:,\s*)?)+)', text):
            for name in re.findall(r'"([^"\n]+)"', m.group(1)):
                if name not in headings:
                    bad.append(f"{path.relative_to(REPO)}: {name!r}")
    assert not bad, f"citations of docs/DESIGN.md sections that do not exist: {bad}"


def test_cited_repository_files_exist():
    """No docstring or comment cites a file that is not in the repository."""
    pattern = re.compile(r"(?<![\w./:-])((?:docs|tests|workflow|config|benchmarks|src)/[\w./-]+\.(?:md|py|smk|yaml|sh|rst))")
    missing = []
    for path in CITING:
        for m in pattern.finditer(path.read_text(errors="ignore")):
            cited = m.group(1).rstrip(".")
            if "{" in cited or "*" in cited or "<" in cited:
                continue
            if not (REPO / cited).exists():
                missing.append(f"{path.relative_to(REPO)} cites {cited}")
    assert not missing, missing


def test_no_bare_design_citation():
    """Every design reference points into this repository's docs/ (a bare DESIGN.md is ambiguous)."""
    bare = [f"{p.relative_to(REPO)}:{i}" for p in CITING
            for i, line in enumerate(p.read_text(errors="ignore").splitlines(), 1)
            if re.search(r"(?<![/\w])DESIGN\.md", line)]
    assert not bare, bare

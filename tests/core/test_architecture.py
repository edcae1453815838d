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


def _imports(path: Path, root: Path) -> set[str]:
    """The successor_heads modules that ``path`` imports anywhere (function-level imports too:
    a lazy import still closes a circle)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("successor_heads")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("successor_heads"):
            for a in node.names:  # `from pkg import module` names a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if (root / (sub.replace(".", "/") + ".py")).is_file() else node.module)
    return out


def import_cycles(src: Path) -> list[list[str]]:
    """Import circles between modules of one package (``src``: the ``successor_heads`` folder)."""
    mods = {".".join(p.relative_to(src.parent).with_suffix("").parts): p for p in src.rglob("*.py")}
    graph = {m: {d for d in _imports(p, src.parent) if d in mods and d != m and d.rsplit(".", 1)[0] == m.rsplit(".", 1)[0]}
             for m, p in mods.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_circle_inside_a_package(tmp_path):
    """A module of a package never imports, directly or through its siblings, a module that
    imports it back (lazy imports included)."""
    assert import_cycles(SRC) == []
    pkg = tmp_path / "successor_heads" / "wild"  # the check itself finds a circle bridged lazily
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from successor_heads.wild.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from successor_heads.wild import a\n")
    assert import_cycles(tmp_path / "successor_heads") == [["successor_heads.wild.a", "successor_heads.wild.b",
                                                            "successor_heads.wild.a"]]


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

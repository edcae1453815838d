"""The rules' declarations, read without running the workflow: every per-model job uses the
cores it is given."""

import re
import subprocess
import sys
from pathlib import Path




def test_workflow_jobs_set_torch_threads_from_snakemake_threads():
    """Every per-model rule takes its threads from the model's resources.cpus, every job script
    passes snakemake.threads to setup_logging, and that sets torch's thread count."""
    root = Path(__file__).resolve().parents[2]
    for smk in sorted((root / "workflow" / "rules").glob("*.smk")):
        for rule in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = rule.split(":")[0].split()[1]
            if 'res("mem_mb")' in rule:  # a per-model rule (zoo-level ones are local, without resources)
                assert 'threads: res("cpus")' in rule, f"{smk.name}: rule {name}"
            assert "threads: 2" not in rule, f"{smk.name}: rule {name} hard-codes its threads"
    scripts = sorted(p for p in (root / "workflow" / "scripts").glob("*.py") if p.name != "_common.py")
    assert len(scripts) >= 8
    for script in scripts:
        assert "setup_logging(snakemake.log[0], snakemake.threads)" in script.read_text(), script.name
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from _common import setup_logging; "
            "setup_logging(sys.argv[2], 3); assert torch.get_num_threads() == 3, torch.get_num_threads(); "
            "import os; assert os.environ['OMP_NUM_THREADS'] == '3'")
    with __import__("tempfile").TemporaryDirectory() as tmp:
        log = Path(tmp) / "job.log"
        subprocess.run([sys.executable, "-c", code, str(root / "workflow" / "scripts"), str(log)], check=True)
        assert "torch threads: 3" in log.read_text()

"""The benchmark scripts run (tiny sizes on the CPU), so that they cannot rot; they assert nothing
about speed."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_cpu_smoke(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--cpu-smoke", "--out",
                        str(tmp_path), "--budget-s", "3600"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {}, report["errors"]
    figures = report["figures"]
    for section in ("students", "capture", "KD", "data", "several", "teacher", "search"):
        assert figures[section], section
    assert "| students |" in r.stdout  # the markdown table
    assert figures["search"]["evaluations that succeeded / captured / with lessons"].startswith("1 / 0 / 1")

"""The README's demo runs end to end: 4 gloo processes, parity with eager."""

import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_readme_demo_trains_with_parity_and_reports_memory():
    proc = subprocess.run([sys.executable, "-m", "examples.demo"], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "parity with single-process eager training: OK" in out
    assert len(re.findall(r"^step \d: loss [\d.]+ +\(one process, eager: [\d.]+\)$", out,
                          re.M)) == 3
    assert re.search(r"^step time: [\d.]+ ms", out, re.M)
    peaks = re.findall(r"^rank (\d): peak live bytes measured (\d+), plan estimate (\d+)$",
                       out, re.M)
    assert [int(r) for r, _, _ in peaks] == [0, 1, 2, 3]
    assert all(m == p and int(m) > 0 for _, m, p in peaks)

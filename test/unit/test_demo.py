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


def test_own_model_example_trains_a_transformers_llama(tmp_path):
    """examples/own_model.py as the README runs it, for a few steps: the
    held-out loss goes down and the saved model loads with from_pretrained."""
    proc = subprocess.run([sys.executable, "-m", "examples.own_model", "--steps", "4",
                           "--out", str(tmp_path / "llama")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "stage 0: model.embed_tokens" in out and "lm_head" in out
    m = re.search(r"held-out loss ([\d.]+) -> ([\d.]+)", out)
    assert m and float(m.group(2)) < float(m.group(1))
    import transformers

    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "llama",
                                                           local_files_only=True)
    assert loaded.config.num_hidden_layers == 4


def test_train_lm_example_streams_checkpoints_and_validates(tmp_path):
    """examples/train_lm.py as the README runs it, for a few steps: held-out
    loss from each periodic checkpoint in metrics.jsonl, going down, and
    the curves' picture in the run directory."""
    import json

    out_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "examples.train_lm", "--steps", "8",
                           "--eval-every", "4", "--out", str(out_dir)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    m = re.search(r"held-out loss ([\d.]+) -> ([\d.]+)", out)
    assert m and float(m.group(2)) < float(m.group(1))
    records = [json.loads(ln) for ln in (out_dir / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["value"] for r in records if r["metric"] == "val_loss"}
    assert sorted(val) == [3, 7] and val[7] < float(m.group(1))
    assert sorted(os.listdir(out_dir / "checkpoints")) == ["step-00000004", "step-00000008"]
    assert (out_dir / "metrics.png").read_bytes()[:4] == b"\x89PNG"

"""Real training runs: data as a stream, progress and metrics, periodic
checkpoints, resume after the whole job was killed, and every damaged
input stopped with one message before any rank starts.

Runs are real torchrun jobs on gloo; numerics are checked against one
process of eager PyTorch on the same batches.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import piper
import piper.runtime.checkpoint
from examples.mlp import MLPConfig, make_mlp, mlp_data
from piper.diagnostics import PiperError
from piper.runtime.launch import run_plan, save_plan
from piper.tools import piper_run

sys.path.insert(0, os.path.dirname(__file__))
from test_runtime import compiled, data, eager  # noqa: E402  (the hand-written 2-stage plan)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _metrics(path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            out.setdefault(rec["metric"], {})[rec["step"]] = rec["value"]
    return out


def test_dataloader_run_matches_eager_training(tmp_path):
    """pp=2 x dp=2 x 2 microbatches over 20 steps of a shuffling DataLoader
    matches eager training on the same batches; the progress line and
    metrics.jsonl report every step; piper-plot draws them."""
    cfg = MLPConfig(dim=16, layers=2, classes=8, batch=2)
    torch.manual_seed(0)
    model, reference = make_mlp(cfg), make_mlp(cfg)
    reference.load_state_dict(model.state_dict())
    plan = piper.compile(model, mlp_data(cfg),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                         strategy=[piper.place(pp=2), piper.split(2), piper.replicate(2),
                                   piper.order("1f1b")])
    rows = torch.randn(160, 16), torch.randint(0, 8, (160,))
    dataset = torch.utils.data.TensorDataset(*rows)

    def loader():
        return torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True,
                                           generator=torch.Generator().manual_seed(3))

    log = tmp_path / "progress.txt"
    with open(log, "w") as stream:
        result = plan.run(loader(), run_dir=str(tmp_path), progress=stream, log_every=5)
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    losses = []
    for x, y in loader():
        ref_opt.zero_grad()
        loss = reference(x, y)
        loss.backward()
        ref_opt.step()
        losses.append(loss.item())
    assert len(result.losses) == 20
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6)
    lines = log.read_text().splitlines()
    assert [ln.split(" |")[0] for ln in lines] == ["step 1", "step 5", "step 10", "step 15",
                                                   "step 20"], lines
    assert re.match(r"step 20 \| loss \d+\.\d{4} \| \S+ sample/s \| \S+ ms/step \| peak \S+ \S+$",
                    lines[-1]), lines[-1]
    m = _metrics(tmp_path / "metrics.jsonl")
    assert sorted(m["loss"]) == list(range(20))
    assert m["loss"] == pytest.approx(dict(enumerate(losses)), rel=1e-5)
    assert all(v > 0 for v in m["step_seconds"].values())
    out = subprocess.run([sys.executable, "-m", "piper.tools.piper_plot",
                          str(tmp_path / "metrics.jsonl")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


class BigInput(torch.nn.Module):
    """A cheap step over a 1 MiB batch: keeping batches would show in RSS."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1024))

    def forward(self, x):
        return (x.mean(dim=0) * self.w).sum()


def test_memory_stays_flat_over_200_steps_of_streamed_data(tmp_path):
    model = BigInput()
    example = torch.randn(64, 1024)  # 256 KiB a microbatch, 1 MiB a global batch
    plan = piper.compile(model, (example,), loss_fn=lambda out: out,
                         optimizer=torch.optim.SGD(model.parameters(), lr=1e-3),
                         strategy=[piper.split(2), piper.replicate(2)])

    def batches():  # made as they are read: never the whole run in memory
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            yield (torch.randn(256, 1024, generator=g),)

    result = plan.run(batches(), steps=200, run_dir=str(tmp_path), progress=False)
    assert len(result.losses) == 200
    m = _metrics(tmp_path / "metrics.jsonl")
    for key in ("rank_rss_bytes", "launcher_rss_bytes"):
        grown = m[key][199] - m[key][10]
        # 190 steps of 1 MiB batches (256 KiB per rank) kept would be 190 MiB
        assert grown < 24 * 2**20, f"{key} grew by {grown / 2**20:.1f} MiB from step 10 to 199"


DATA_MODULE = """
import os, time, torch

def batches():
    g = torch.Generator().manual_seed(1)
    torch.randn(4, generator=g), torch.randn(4, generator=g)  # as test_runtime.data draws
    slow = os.environ.get("SLOW_READER") == "1"
    for i in range(8):
        if slow:  # the run is still going when it is killed, however loaded the machine
            time.sleep(0.25 if i < 5 else 60)
        yield {"input0": torch.randn(16, generator=g)}
"""


def test_kill_everything_then_resume_gives_identical_losses(tmp_path):
    """SIGKILL of the launcher, torchrun and every rank midway; `--resume`
    continues from the newest complete checkpoint, skipping the batches it
    had consumed, with the losses and weights of an uninterrupted run."""
    (tmp_path / "mydata.py").write_text(DATA_MODULE)
    state, batches = data(8)
    plan_dir, ck = tmp_path / "plan", tmp_path / "ck"
    save_plan(str(plan_dir), compiled(2), state)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    cmd = [sys.executable, "-m", "piper.tools.piper_run", str(plan_dir), "--steps", "8",
           "--data", "mydata:batches", "--checkpoint-every", "2", "--checkpoint-dir", str(ck),
           "--keep-checkpoints", "2", "--timeout", "60"]
    job = subprocess.Popen(cmd, env=dict(env, SLOW_READER="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (ck / "step-00000004").exists():
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "no checkpoint at step 4 in time"
        time.sleep(0.05)
    subprocess.run(["pkill", "-KILL", "-f", str(plan_dir)], check=False)  # every process
    job.wait(30)
    assert job.returncode == -signal.SIGKILL
    done = sorted(d for d in os.listdir(ck) if d.startswith("step-"))
    # the newest two kept (three when the kill came between a checkpoint's
    # rename and the removal of the oldest: all complete, none partial)
    assert done and len(done) <= 3
    assert not [d for d in os.listdir(ck) if not d.startswith(("step-", ".step-"))]
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    got = {int(s): float(v) for s, v in re.findall(r"step (\d+): loss (\S+)", resumed.stdout)}
    first = min(got)
    assert first >= 4 and max(got) == 7, resumed.stdout
    # the same job, never interrupted: bit for bit the same losses and weights
    sys.path.insert(0, str(tmp_path))
    import mydata

    whole_dir = tmp_path / "whole"
    save_plan(str(whole_dir), compiled(2), state)
    whole = run_plan(str(whole_dir), 4, 8, data=mydata.batches(), progress=False)
    m = _metrics(plan_dir / "metrics.jsonl")  # full precision; the resumed run appended
    assert [m["loss"][s] for s in range(first, 8)] == whole.losses[first:]
    final = piper.runtime.checkpoint.load_full(str(ck / "step-00000008"))
    for k in ("w0", "w1"):
        assert torch.equal(final[k], whole.state[k])
    ref_losses, _ = eager(state, batches, 8)  # and both train as eager PyTorch does
    torch.testing.assert_close(torch.tensor(whole.losses), torch.tensor(ref_losses),
                               rtol=1e-5, atol=1e-6)


def test_checkpoint_loads_into_a_plain_module(tmp_path):
    cfg = MLPConfig(dim=16, layers=2, classes=8, batch=2)
    model = make_mlp(cfg)
    plan = piper.compile(model, mlp_data(cfg),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                         strategy=[piper.replicate(2), piper.shard(3)])
    big = MLPConfig(**{**cfg.__dict__, "batch": 4})
    plan.run([mlp_data(big, seed=s) for s in range(3)], checkpoint_every=2,
             checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert sorted(os.listdir(tmp_path / "ck")) == ["step-00000002", "step-00000003"]
    fresh = make_mlp(cfg)
    piper.load_checkpoint(fresh, str(tmp_path / "ck" / "step-00000003"))
    for k, v in plan.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
    with pytest.raises(PiperError, match="this model does not have"):
        piper.load_checkpoint(torch.nn.Linear(2, 2), str(tmp_path / "ck" / "step-00000003"))


def _two_stage(tmp_path, steps=3):
    state, batches = data(steps)
    save_plan(str(tmp_path), compiled(), state)
    return state, batches


def test_data_that_ends_early_stops_with_the_step_and_keeps_the_checkpoints(tmp_path):
    state, batches = _two_stage(tmp_path / "p", 5)
    ck = tmp_path / "ck"

    def three():
        yield from batches[:3]

    with pytest.raises(PiperError, match=r"the data ended after 3 batches, but 5 steps were "
                                         r"asked for .* stopped at step 3"):
        run_plan(str(tmp_path / "p"), 4, 5, data=three(), checkpoint_every=1,
                 checkpoint_dir=str(ck), keep_checkpoints=0, progress=False)
    from piper.runtime.checkpoint import latest

    path, manifest = latest(str(ck))
    assert manifest["step"] == 3  # what was trained is kept
    assert sorted(os.listdir(ck)) == ["step-00000001", "step-00000002", "step-00000003"]
    # without `steps`, a run goes until the data ends
    res = run_plan(str(tmp_path / "p"), 4, None, data=three(), progress=False)
    ref, _ = eager(state, batches, 3)
    torch.testing.assert_close(torch.tensor(res.losses), torch.tensor(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("at", "bad", "message"), [
    # batch 12: the ranks are training (the feed runs 8 steps ahead)
    (12, {"input0": torch.randn(15)}, r"batches\[12\]\['input0'\] has shape \[15\]; the plan "
                                      r"takes 2 replicas x 2 microbatches of shape \[4\]"),
    # the first batch: read and checked before any rank starts
    (0, {"input0": torch.zeros(16, dtype=torch.int64)}, r"batches\[0\]\['input0'\] is int64; "
                                                        r"the plan takes float32"),
    (0, ValueError("disk gone"), r"data: reading batches\[0\] \(step 0\) raised ValueError: "
                                 r"disk gone"),
])
def test_bad_batch_stops_the_run_naming_the_step(tmp_path, at, bad, message):
    _, batches = _two_stage(tmp_path, 16)

    def stream():
        yield from batches[:at]
        if isinstance(bad, Exception):
            raise bad
        yield bad

    t0 = time.monotonic()
    with pytest.raises(PiperError, match=message):
        run_plan(str(tmp_path), 4, 16, data=stream(), progress=False, timeout=30)
    assert time.monotonic() - t0 < 60
    # the ranks were started for batch 12 only; stopped, they wrote no output
    assert (tmp_path / "progress").exists() == (at == 12)
    assert not (tmp_path / "out").exists()


def _corrupt(path, how):
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "delete":
        path.unlink()
    elif how == "not utf-8":
        path.write_bytes(path.read_bytes().replace(b"sched", b"sch\xffd", 1))
    elif how == "dict":
        torch.save({"input0": torch.randn(16)}, path)


@pytest.mark.parametrize(("name", "how", "message"), [
    ("plan.mlir", "not utf-8", r"plan.mlir: byte \d+ is not UTF-8 text"),
    ("plan.mlir", "delete", r"plan.mlir: no such file"),
    ("state.pt", "truncate", r"state.pt: cannot be read as the plan's initial state"),
    ("state.pt", "delete", r"state.pt: no such file"),
    ("data.pt", "truncate", r"data.pt: cannot be read as saved batches"),
    ("data.pt", "delete", r"data.pt: no such file, and no data given"),
    ("data.pt", "dict", r"data.pt: holds a dict, not a list of batches"),
])
def test_damaged_plan_directory_is_one_error_before_launch(tmp_path, capsys, name, how,
                                                           message):
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    (tmp_path / "plan.cache").unlink()  # the text is what counts
    _corrupt(tmp_path / name, how)
    assert piper_run.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("\n") <= 2, err  # one error, no traceback
    assert not (tmp_path / "out").exists()  # no rank ever started


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A plan directory and a checkpoint it wrote after one step."""
    where = tmp_path_factory.mktemp("ck")
    state, batches = data(2)
    save_plan(str(where / "p"), compiled(), state, batches)
    run_plan(str(where / "p"), 4, 1, save_checkpoint=str(where / "ck"), progress=False)
    return where


@pytest.mark.parametrize(("damage", "message"), [
    ("rank file", r"rank1.pt is damaged \(its checksum"),
    ("manifest", r"no manifest.json: the job that wrote it did not finish saving"),
    ("other model", r"has no tensor 'w1': it is from another model"),
])
def test_damaged_checkpoint_is_one_error_before_launch(saved_checkpoint, tmp_path, capsys,
                                                       damage, message):
    import shutil

    from piper.runtime.checkpoint import sha256, verify

    ck = tmp_path / "ck"
    shutil.copytree(saved_checkpoint / "ck", ck)
    verify(str(ck))  # complete before the damage
    if damage == "rank file":
        blob = bytearray((ck / "rank1.pt").read_bytes())
        blob[-20] ^= 0xFF
        (ck / "rank1.pt").write_bytes(bytes(blob))
    elif damage == "manifest":
        (ck / "manifest.json").unlink()
    else:  # a checkpoint of a model without w1, consistent in itself
        for f in ck.glob("rank*.json"):
            m = json.loads(f.read_text())
            m["shapes"].pop("w1", None)
            f.write_text(json.dumps(m))
        manifest = json.loads((ck / "manifest.json").read_text())
        manifest["files"] = {k: sha256(str(ck / k)) for k in manifest["files"]}
        (ck / "manifest.json").write_text(json.dumps(manifest))
    plan = tmp_path / "p"
    shutil.copytree(saved_checkpoint / "p", plan, ignore=shutil.ignore_patterns("out"))
    assert piper_run.main([str(plan), "--load-checkpoint", str(ck)]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count("\n") <= 2, err
    assert not (plan / "out").exists()  # no rank ever started


def test_failing_ranks_report_one_line_each(tmp_path):
    _two_stage(tmp_path, 1)
    with pytest.raises(PiperError) as e:
        run_plan(str(tmp_path), 4, 1, timeout=20, progress=False,
                 worker_args=("--fail-rank", "1", "--fail-at", "4"),
                 data=[{"input0": torch.randn(16)}])
    lines = e.value.render().splitlines()[1:]
    assert lines and all(re.match(r"\s*piper: rank \d ", ln) for ln in lines), lines
    ranks = [int(re.match(r"\s*piper: rank (\d)", ln).group(1)) for ln in lines]
    assert ranks == sorted(set(ranks))  # one line per rank, in rank order
    assert "Traceback" not in e.value.render()


def test_data_module_errors_are_one_message(tmp_path, capsys, monkeypatch):
    _two_stage(tmp_path / "p")
    (tmp_path / "baddata.py").write_text(textwrap.dedent("""
        def batches():
            raise OSError("corpus not mounted")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, message in (("baddata:batches", "batches() raised OSError: corpus not mounted"),
                          ("baddata:nothing", "baddata has no function nothing"),
                          ("nosuchmodule:f", "importing nosuchmodule failed"),
                          ("justaname", "expected MODULE:FUNCTION")):
        assert piper_run.main([str(tmp_path / "p"), "--data", spec]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") <= 2, err


@pytest.mark.parametrize(("tensor", "message"), [
    (torch.zeros(5), r"state.pt: tensor 'w0' has shape \[5\]; the plan loads \[2\] "
                     r"\(shard 0 of 2\)"),
    (torch.zeros(4, dtype=torch.float64), r"state.pt: tensor 'w0' is torch.float64; the plan "
                                          r"loads torch.float32"),
])
def test_initial_state_of_another_model_is_one_error_before_launch(tmp_path, capsys, tensor,
                                                                   message):
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(3), {**state, "w0": tensor}, batches)
    assert piper_run.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_trace_directory_that_cannot_be_made_is_one_error_before_launch(tmp_path):
    cfg = MLPConfig(dim=4, layers=1, classes=2, batch=2)
    model = make_mlp(cfg)
    plan = piper.compile(model, mlp_data(cfg), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         strategy=[])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(PiperError, match=r"trace: cannot create the directory '.*a_file/trace'"):
        plan.run([mlp_data(cfg)], trace=str(tmp_path / "a_file" / "trace"), progress=False,
                 plan_dir=str(tmp_path / "plan"))
    assert not (tmp_path / "plan").exists()  # rejected before anything was saved or launched

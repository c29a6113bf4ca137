"""Runtime: real gloo processes under torchrun executing sched programs.

Uses the hand-written 2-stage plan of test/dist/Inputs (loss = mean over
chunks of sum(x * w0 * w1), SGD lr 0.1), whose eager reference is a few
lines, so these tests do not depend on capture. Model-level parity of every
strategy is in test_strategies.py.
"""

import os
import re
import subprocess
import sys
import time

import pytest
import torch
from xdsl.passes import PassPipeline

from piper.analysis.memory import program_peak_bytes
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.ir import context, parse_module
from piper.passes import all_passes
from piper.runtime.launch import run_plan, save_plan

HERE = os.path.dirname(__file__)
TWO_STAGE = os.path.join(HERE, "..", "dist", "Inputs", "two_stage.mlir")
PIPELINE = ('convert-graph-to-dist,microbatch{n=2},replicate{n=2},{zero}'
            'schedule{kind="1f1b"},lower-dist-to-sched,verify-plan')


def compiled(zero: int = 0):
    m = parse_module(open(TWO_STAGE).read())
    spec = PIPELINE.replace("{zero}", f"zero{{stage={zero}}}," if zero else "")
    PassPipeline.parse_spec(all_passes(), spec).apply(context(), m)
    return m


def data(steps=5):
    g = torch.Generator().manual_seed(1)
    w0, w1 = torch.randn(4, generator=g), torch.randn(4, generator=g)
    batches = [{"input0": torch.randn(16, generator=g)} for _ in range(steps)]
    return {"w0": w0, "w1": w1}, batches


def eager(state, batches, steps):
    a = state["w0"].clone().requires_grad_()
    b = state["w1"].clone().requires_grad_()
    losses = []
    for s in range(steps):
        x = batches[s]["input0"].reshape(4, 4)
        loss = torch.stack([(x[i] * a * b).sum() for i in range(4)]).mean()
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            a -= 0.1 * a.grad
            b -= 0.1 * b.grad
            a.grad = b.grad = None
    return losses, {"w0": a.detach(), "w1": b.detach()}


@pytest.mark.parametrize("zero", [0, 3])
def test_pp_dp_microbatch_matches_eager(tmp_path, zero):
    state, batches = data(3)
    module = compiled(zero)
    save_plan(str(tmp_path), module, state, batches)
    res = run_plan(str(tmp_path), 4, steps=3)
    ref_losses, ref_state = eager(state, batches, 3)
    torch.testing.assert_close(torch.tensor(res.losses), torch.tensor(ref_losses), rtol=1e-5, atol=1e-6)
    for k in ref_state:
        torch.testing.assert_close(res.state[k], ref_state[k], rtol=1e-5, atol=1e-6)
    # measured peak live bytes equal the plan's estimate, rank by rank
    progs = programs(module)
    for r in range(4):
        assert max(res.peak_bytes[r]) == program_peak_bytes(progs[r])


def test_forked_ranks_and_fresh_interpreters_train_alike(tmp_path, monkeypatch):
    """One-node ranks fork from a fork server that imported torch once
    (piper/runtime/forkserver.py), which later runs of the process reuse;
    PIPER_FORKSERVER=0 starts every rank as a fresh interpreter. Both train
    exactly like eager."""
    from piper.runtime import forkserver

    state, batches = data(2)
    ref_losses, ref_state = eager(state, batches, 2)
    results, servers = [], []
    for i, setting in enumerate(("1", "1", "0")):
        monkeypatch.setenv("PIPER_FORKSERVER", setting)
        save_plan(str(tmp_path / str(i)), compiled(), state, batches)
        results.append(run_plan(str(tmp_path / str(i)), 4, steps=2, progress=False))
        servers.append(forkserver._server)
    assert servers[0] is not None and servers[1] is servers[0]  # the second run reused it
    assert servers[0].proc.poll() is None
    for res in results:
        torch.testing.assert_close(torch.tensor(res.losses), torch.tensor(ref_losses),
                                   rtol=1e-5, atol=1e-6)
        for k in ref_state:
            torch.testing.assert_close(res.state[k], ref_state[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_resume_gives_identical_losses(tmp_path):
    state, batches = data(5)
    ref_losses, ref_state = eager(state, batches, 5)
    first = tmp_path / "first"
    save_plan(str(first), compiled(2), state, batches[:3])
    ck = tmp_path / "ck"
    run_plan(str(first), 4, steps=3, worker_args=("--save-checkpoint", str(ck)))
    # resume under a different layout (no ZeRO): shards are reassembled
    second = tmp_path / "second"
    save_plan(str(second), compiled(), state, batches[3:])
    resumed = run_plan(str(second), 4, steps=2, worker_args=("--load-checkpoint", str(ck)))
    torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(ref_losses[3:]),
                               rtol=1e-5, atol=1e-6)
    for k in ("w0", "w1"):
        torch.testing.assert_close(resumed.state[k], ref_state[k], rtol=1e-5, atol=1e-6)


def test_rank_that_raises_is_named_by_the_others(tmp_path):
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    t0 = time.monotonic()
    with pytest.raises(PiperError) as e:
        run_plan(str(tmp_path), 4, steps=1, timeout=30,
                 worker_args=("--fail-rank", "1", "--fail-at", "4"))
    assert time.monotonic() - t0 < 60
    text = e.value.render()
    assert re.search(r"rank 1 failed at instruction 4 \(", text), text
    # at least one other rank reports the failed rank and its instruction
    assert re.search(r"rank [023] stops at .*rank 1 failed at instruction 4", text), text


def test_killed_rank_ends_the_job_with_a_message(tmp_path):
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    t0 = time.monotonic()
    with pytest.raises(PiperError) as e:
        run_plan(str(tmp_path), 4, steps=1, timeout=20,
                 worker_args=("--fail-rank", "2", "--fail-at", "3", "--fail-mode", "kill"))
    assert time.monotonic() - t0 < 60
    text = e.value.render()
    # every other rank leaves with a message naming rank 2 and the
    # instruction it was killed at (its position file outlives it)
    for r in (0, 1, 3):
        assert re.search(rf"rank {r} stops at .*rank 2 stopped answering.* at instruction 3 \(",
                         text), text


def test_malformed_plan_is_rejected_before_launch(tmp_path):
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    plan = tmp_path / "plan.mlir"
    text = plan.read_text().replace("sched.wait", "sched.wiat", 1)
    plan.write_text(text)
    line = next(i + 1 for i, ln in enumerate(text.splitlines()) if "sched.wiat" in ln)
    proc = subprocess.run([sys.executable, "-m", "piper.tools.piper_run", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"plan.mlir:{line}:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # no rank ever started


def test_batch_that_does_not_divide_is_a_clear_error(tmp_path):
    state, batches = data(1)
    batches = [{"input0": torch.randn(14)}]
    save_plan(str(tmp_path), compiled(), state, batches)
    with pytest.raises(PiperError) as e:
        run_plan(str(tmp_path), 4, steps=1, timeout=20)
    assert ("batches[0]['input0'] has shape [14]; the plan takes 2 replicas x 2 microbatches "
            "of shape [4], a batch of shape [16]") in e.value.render()
    assert not (tmp_path / "out").exists()  # rejected before any process started
    save_plan(str(tmp_path), compiled(), state, [{"x": torch.randn(16)}])
    with pytest.raises(PiperError, match=r"batches\[0\] has the key 'x'; a batch is a tuple"):
        run_plan(str(tmp_path), 4, steps=1, timeout=20)


def test_plan_that_fails_its_checks_is_rejected_before_launch(tmp_path):
    """A plan that parses but cannot run (a send whose receive is gone, a
    program count unlike the job's) stops before any process starts."""
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    with pytest.raises(PiperError, match="the plan has 4 device programs; the job would start 2"):
        run_plan(str(tmp_path), 2, steps=1)
    plan = tmp_path / "plan.mlir"
    text = plan.read_text()
    assert " to 2 tag 0 " in text
    plan.write_text(text.replace(" to 2 tag 0 ", " to 2 tag 999 ", 1))
    proc = subprocess.run([sys.executable, "-m", "piper.tools.piper_run", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "device 0: send to 2 tag 999 has no matching receive on device 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_two_launchers_rendezvous_as_two_nodes(tmp_path):
    """Multi-node through torchrun's rendezvous: two piper-run launchers
    (nodes 0 and 1, two processes each) meet at a c10d endpoint and train
    as one job; node 0 reports the result."""
    from piper.runtime.launch import free_port

    state, batches = data(3)
    save_plan(str(tmp_path), compiled(), state, batches)
    port = free_port()
    common = [sys.executable, "-m", "piper.tools.piper_run", str(tmp_path), "--steps", "3",
              "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
              "--rdzv-id", "piper-test", "--timeout", "60"]
    procs = [subprocess.Popen(common + ["--node-rank", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ref_losses, _ = eager(state, batches, 3)
    got = [float(m) for m in re.findall(r"step \d+: loss (\S+)", outs[0][0])]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref_losses), rtol=1e-5, atol=1e-6)
    assert "node 1: done" in outs[1][0]
    assert sorted(os.listdir(tmp_path / "out")) == [f"rank{r}.pt" for r in range(4)]


def _gpus(monkeypatch, count: int) -> None:
    """This process sees `count` CUDA GPUs (0: none), whatever the machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_backend_choice_on_a_machine_without_gpus(tmp_path, monkeypatch):
    """The CPU path runs on every machine: no GPU is made visible to this
    process (choose_backend) nor to piper-run's (CUDA_VISIBLE_DEVICES="")."""
    from piper.runtime.worker import choose_backend, to_device

    _gpus(monkeypatch, 0)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert choose_backend("auto") == ("gloo", torch.device("cpu"))
    assert choose_backend("gloo") == ("gloo", torch.device("cpu"))
    with pytest.raises(PiperError, match="backend nccl needs CUDA GPUs"):
        choose_backend("nccl")
    moved = to_device([{"x": torch.ones(2)}, (torch.zeros(1), 3)], torch.device("cpu"))
    assert moved[0]["x"].device.type == "cpu" and moved[1][1] == 3
    # piper-run --backend nccl ends with one message, before any step runs
    state, batches = data(1)
    save_plan(str(tmp_path), compiled(), state, batches)
    proc = subprocess.run([sys.executable, "-m", "piper.tools.piper_run", str(tmp_path),
                           "--backend", "nccl", "--timeout", "20"],
                          capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 1
    assert "backend nccl needs CUDA GPUs; this machine has none" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_backend_choice_with_gpus(monkeypatch):
    """One GPU per local rank takes NCCL on the rank's own GPU; fewer GPUs
    than local ranks fall back to gloo (auto) or are an error (nccl). Runs
    on every machine with the GPU count stubbed; on a machine with GPUs,
    the real count is checked too."""
    from piper.runtime.worker import choose_backend

    real = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if real:  # a GPU machine, as it is: one local rank on GPU 0
        assert choose_backend("auto") == ("nccl", torch.device("cuda", 0))
        assert choose_backend("nccl") == ("nccl", torch.device("cuda", 0))
    _gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose_backend("auto") == ("nccl", torch.device("cuda", 1))
    assert choose_backend("nccl") == ("nccl", torch.device("cuda", 1))
    assert choose_backend("gloo") == ("gloo", torch.device("cpu"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert choose_backend("auto") == ("gloo", torch.device("cpu"))
    with pytest.raises(PiperError, match="one GPU per local rank: 4 ranks, 2 GPUs"):
        choose_backend("nccl")

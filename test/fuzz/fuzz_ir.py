"""A mutation fuzzer for piper-opt: every bad input gets one clear, located
error (issue 17, docs/fuzzing.md).

It takes the lit test inputs (test/**/*.mlir, one `// -----` chunk at a
time) and the JSON strategies of test/directives/Inputs and test/tools/Inputs,
breaks each a little (a line deleted, duplicated or swapped, a value used
before its definition, an integer made 0, -1, huge or "٣", an attribute
string changed or deleted, the file truncated, garbage or non-UTF-8 bytes
inserted, ...), runs piper-opt on it with a pass pipeline fit for its level,
and checks what comes back:

  - exit status 0 or 1 (2 is piper-opt's "internal error"),
  - no Python traceback and no "internal error" on stderr,
  - no hang (the run ends within --timeout seconds),
  - every error is located: its first line starts with the input's file
    name (`FILE:LINE:COL: error: ...`, or `FILE: error: ...`), and no line
    is a bare `error: ...`.

Mutant I of seed S is the same on every run of the same corpus
(`random.Random(f"{S}/{I}")`), so `--seed S --only I` rebuilds a failing
mutant, prints its command and runs it again.

Runners: `fork` (the default) forks one process per mutant from a parent
that has imported Piper once; the child runs piper-opt's real `main` with
its stdout and stderr on files and exits with its status. `exec` starts
`python -m piper.tools.piper_opt` afresh for each mutant (the real command,
about 0.3 s slower per mutant). Both enforce the timeout by killing the
process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST = ROOT / "test"
SPLIT = re.compile(r"^// -----\s*$", re.M)
MEMORY_LIMIT = 6 << 30  # bytes of address space per mutant: a huge size must not take the machine

# Pass pipelines per level of IR; a mutant gets one at random.
PIPELINES = {
    "graph": [
        'place{pp=2},split{n=2},order{schedule="1f1b"},lower-dist-to-sched,verify-plan',
        'place{pp=2},split{n=2},lower-dist-to-sched,verify-plan,simulate',
        'place{pp=2},split{n=2},replicate{n=2},shard{stage=1},lower-dist-to-sched,verify-plan',
        'recompute,split_backward,place{pp=2},split{n=2},order{schedule="zb-h1"},'
        'lower-dist-to-sched,verify-plan',
        'pipeline-split',
        'fuse-elementwise,fuse-reductions,fuse-matmul-epilogue,kernel-backend',
    ],
    "dist": [
        'lower-dist-to-sched,verify-plan,simulate',
        'lower-dist-to-sched,verify-plan',
    ],
    "sched": ['verify-plan,simulate', 'verify-plan'],
    "kernel": ['kernel-backend{backend="aten"}', 'fuse-elementwise,kernel-backend'],
}
STRATEGY_MODEL = {"expert_parallel": "test/dist/Inputs/moe_one_layer.mlir"}
DEFAULT_MODEL = "test/dist/Inputs/mlp4.mlir"

INTS = ["0", "-1", "1", "2", "7", "-7", "4294967296", "9223372036854775808",
        "99999999999999999999999999", "٣", "1e9", "3.5", "0x10", ""]
STRINGS = [
    "", "act", "param", "grad", "saved", "input", "loss", "tangent", "grad_act", "state",
    "bogus", "F0#0", "F0#x", "F0#99", "F0#-1", "F99#0", "B1#0", "#", "F0", "F0#0#0",
    "aten.nope.default", "aten.mul.Tensor", "aten", "F", "B", "W", "OPT", "X",
    "comm", "compute", "ß", "٣", "all_reduce", "sum", "1f1b", "gpipe", "\\n", "x" * 200,
]
JSON_VALUES = [0, -1, 1, 2, 3, 1 << 40, 10 ** 30, "٣", 1.5, "", "x", None, True, [],
               {}, [0, 1], {"PP": 0}, {"PP": "*"}, "1f1b", "interleaved", "F", "*",
               "rank0: 0F0", "0:0,1:1"]
GARBAGE = [b"\xff", b"\xfe\xff", b"\x00", b"\xc3", b"\xe2\x82", b"}", b"{", b"(", b")", b"%",
           b"\"", b"<", b">", b"#", b"@", b"^bb0:", b"!", b"\t", b"\r", b"\\", b":", b",",
           "٣".encode(), "é".encode(), b"\x1b[31m", b"// -----\n"]
SSA = re.compile(rb"%[A-Za-z_0-9.$-]+")
INT = re.compile(rb"(?<![A-Za-z_0-9.#%@])-?\d+(?![0-9])")
STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')
ATTR = re.compile(rb"\b[A-Za-z_][\w.]* = (?:\"[^\"\n]*\"|[-\w.]+(?: : \w+)?)(?:, )?")
OPNAME = re.compile(rb"\b(?:graph|dist|sched|kernel|func)\.[a-z_]+\b")


# ----------------------------------------------------------------------------- corpus

@dataclass(frozen=True)
class Source:
    name: str        # test path, with `#N` for chunk N of a split file
    text: bytes
    level: str       # graph, dist, sched, kernel, or strategy
    model: str = ""  # for a strategy: the IR it compiles


def level_of(text: bytes) -> str:
    """The level of the IR (not of its CHECK lines)."""
    text = b"\n".join(line for line in text.splitlines() if not line.lstrip().startswith(b"//"))
    if b"sched.program" in text:
        return "sched"
    if b"dist.plan" in text:
        return "dist"
    if b"kernel.fused" in text:
        return "kernel"
    return "graph"


def corpus() -> list[Source]:
    sources = []
    for path in sorted(TEST.rglob("*.mlir")):
        if "Output" in path.relative_to(TEST).parts:  # what lit's runs wrote (%t)
            continue
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        chunks = SPLIT.split(text)
        for i, chunk in enumerate(chunks):
            body = "\n".join(line for line in chunk.splitlines()
                             if not line.lstrip().startswith("//"))
            if not body.strip():
                continue
            data = chunk.encode()
            sources.append(Source(f"{rel}#{i}" if len(chunks) > 1 else rel, data,
                                  level_of(data)))
    for folder in ("test/directives/Inputs", "test/tools/Inputs"):
        for path in sorted((ROOT / folder).glob("*.json")):
            model = next((m for k, m in STRATEGY_MODEL.items() if path.name.startswith(k)),
                         DEFAULT_MODEL)
            sources.append(Source(path.relative_to(ROOT).as_posix(), path.read_bytes(),
                                  "strategy", model))
    return sources


RUN_P = re.compile(r"RUN: (?!not ).*?piper-opt\s+(%[sS]\S*).*?\s-p\s+(?:'([^']*)'|(\S+))")


def run_pipelines() -> dict[str, list[str]]:
    """The pass pipelines the lit tests run on each input file (their RUN
    lines: `piper-opt %s -p '...'`, `piper-opt %S/Inputs/x.mlir -p ...`),
    by the input's path from the repository root: the pipelines that input
    is meant for."""
    out: dict[str, list[str]] = {}
    for path in sorted([*TEST.rglob("*.mlir"), *TEST.rglob("*.test")]):
        if "Output" in path.relative_to(TEST).parts:
            continue
        for m in RUN_P.finditer(path.read_text(errors="replace")):
            target = m.group(1).replace("%S", str(path.parent)).replace("%s", str(path))
            pipeline = m.group(2) if m.group(2) is not None else m.group(3)
            if "%" in pipeline or not os.path.exists(target):
                continue
            rel = Path(os.path.normpath(target)).relative_to(ROOT).as_posix()
            if pipeline not in out.setdefault(rel, []):
                out[rel].append(pipeline)
    return out


# ----------------------------------------------------------------------------- mutations

def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def delete_line(rng, data):
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def duplicate_line(rng, data):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(i, lines[i])
    return b"\n".join(lines)


def swap_lines(rng, data):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    j = min(len(lines) - 1, i + 1) if rng.random() < 0.5 else rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def truncate(rng, data):
    return data[:rng.randrange(len(data) + 1)]


def garbage(rng, data):
    at = rng.randrange(len(data) + 1)
    junk = b"".join(rng.choice(GARBAGE) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.2:
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return data[:at] + junk + data[at:]


def _replace_match(rng, data, pattern, values, group=0):
    found = list(pattern.finditer(data))
    if not found:
        return None
    m = rng.choice(found)
    return data[:m.start(group)] + values(m) + data[m.end(group):]


def swap_ssa(rng, data):
    """One use of %a becomes %b, a value defined later, elsewhere or never:
    use before definition, a type mismatch, an undefined value."""
    names = sorted({m.group() for m in SSA.finditer(data)})
    if len(names) < 2:
        return None
    other = rng.choice(names + [b"%undefined"])
    return _replace_match(rng, data, SSA, lambda m: other)


def change_int(rng, data):
    return _replace_match(rng, data, INT, lambda m: rng.choice(INTS).encode())


def change_string(rng, data):
    def value(m):
        text = m.group()
        if rng.random() < 0.3 and b"#" in text:  # a graph.from: another producer
            return b'"' + rng.choice([b"F0#x", b"F9#0", b"F0#-1", b"#0", b"F0#", b"B0#0"]) + b'"'
        return json.dumps(rng.choice(STRINGS), ensure_ascii=False).encode()
    return _replace_match(rng, data, STRING, value)


def change_kind(rng, data):
    """A graph.kind or graph.from given another (maybe wrong) value."""
    pattern = re.compile(rb'graph\.(?:kind|from|name) = ("[^"\n]*")')
    return _replace_match(rng, data, pattern,
                          lambda m: json.dumps(rng.choice(STRINGS)).encode(), group=1)


def delete_attr(rng, data):
    return _replace_match(rng, data, ATTR, lambda m: b"")


def change_op(rng, data):
    """An op named as another op of the IR (its syntax no longer fits)."""
    names = sorted({m.group() for m in OPNAME.finditer(data)})
    if len(names) < 2:
        return None
    return _replace_match(rng, data, OPNAME, lambda m: rng.choice(names))


def drop_operand(rng, data):
    return _replace_match(rng, data, re.compile(rb", %[\w.]+|%[\w.]+, "), lambda m: b"")


TEXT_MUTATIONS = {f.__name__: f for f in (
    delete_line, duplicate_line, swap_lines, truncate, garbage, swap_ssa, change_int,
    change_string, change_kind, delete_attr, change_op, drop_operand)}


def json_edit(rng, data):
    """A structural edit of a JSON strategy: a value replaced, a key deleted
    or renamed, a directive duplicated, dropped or moved."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    slots = []

    def walk(node):
        if isinstance(node, dict):
            for k in list(node):
                slots.append((node, k))
                walk(node[k])
        elif isinstance(node, list):
            for i in range(len(node)):
                slots.append((node, i))
                walk(node[i])
    walk(doc)
    if not slots:
        return None
    parent, key = rng.choice(slots)
    action = rng.choice(["value", "value", "delete", "rename", "duplicate", "swap"])
    if action == "value":
        parent[key] = rng.choice(JSON_VALUES)
    elif action == "delete":
        del parent[key]
    elif action == "rename" and isinstance(parent, dict):
        parent[rng.choice(["directive", "filter", "n", "pp", "schedule", "devices", "X", ""])] = (
            parent.pop(key))
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, parent[key])
    elif isinstance(parent, list) and len(parent) > 1:
        j = rng.randrange(len(parent))
        parent[key], parent[j] = parent[j], parent[key]
    else:
        parent[key] = rng.choice(JSON_VALUES)
    return json.dumps(doc, ensure_ascii=False).encode()


# How often each is drawn: the edits that keep the text parseable reach the
# verifiers and the passes; truncation and garbage mostly the parser.
WEIGHTS = {"truncate": 1, "garbage": 1, "delete_line": 2, "duplicate_line": 2, "swap_lines": 2,
           "swap_ssa": 3, "change_int": 4, "change_string": 3, "change_kind": 3,
           "delete_attr": 3, "change_op": 2, "drop_operand": 2}
STRATEGY_MUTATIONS = {"json_edit": json_edit,
                      **{k: TEXT_MUTATIONS[k] for k in (
                          "truncate", "garbage", "change_int", "change_string", "delete_line")}}
STRATEGY_WEIGHTS = {"json_edit": 6, "truncate": 1, "garbage": 1, "change_int": 2,
                    "change_string": 2, "delete_line": 1}


@dataclass
class Mutant:
    index: int
    source: Source
    mutations: list[str]
    data: bytes
    pipeline: str
    argv: list[str] = field(default_factory=list)
    input_path: str = ""


def pick(rng, sources: list[Source]) -> Source:
    """A file (each test file alike, a strategy half as likely), then one of
    its chunks: the long invalid.mlir files do not crowd out the rest."""
    files: dict[str, list[Source]] = {}
    for s in sources:
        files.setdefault(s.name.split("#")[0], []).append(s)
    names = sorted(files)
    weights = [0.5 if files[n][0].level == "strategy" else 1.0 for n in names]
    return rng.choice(files[rng.choices(names, weights)[0]])


def make_mutant(sources: list[Source], seed: int, index: int,
                runs: dict[str, list[str]] | None = None) -> Mutant:
    """Mutant `index` of `seed`: a source, one to three mutations, and a
    pipeline (one its lit tests run on it, or one for its level)."""
    rng = random.Random(f"{seed}/{index}")
    source = pick(rng, sources)
    table, weights = ((STRATEGY_MUTATIONS, STRATEGY_WEIGHTS) if source.level == "strategy"
                      else (TEXT_MUTATIONS, WEIGHTS))
    names = sorted(table)
    data, done = source.text, []
    for _ in range(rng.choices([1, 2, 3], [6, 3, 1])[0]):
        for _attempt in range(10):
            name = rng.choices(names, [weights[n] for n in names])[0]
            out = table[name](rng, data) if data else None
            if out is not None and out != data:
                data = out
                done.append(name)
                break
    own = (runs or {}).get(source.name.split("#")[0], [])
    pipeline = ("" if source.level == "strategy" else
                rng.choice(own) if own and rng.random() < 0.7 else
                rng.choice(PIPELINES[source.level]))
    return Mutant(index, source, done, data, pipeline)


def place(m: Mutant, folder: Path) -> None:
    """Write the mutant's input to `folder` and set its piper-opt argv."""
    if m.source.level == "strategy":
        path = folder / f"m{m.index:06d}.json"
        path.write_bytes(m.data)
        m.argv = [str(ROOT / m.source.model), "--strategy", str(path)]
        if m.index % 5 == 0:
            m.argv.append("--print-strategy")
    else:
        path = folder / f"m{m.index:06d}.mlir"
        path.write_bytes(m.data)
        m.argv = [str(path)] + (["-p", m.pipeline] if m.pipeline else [])
    m.input_path = str(path)


# ----------------------------------------------------------------------------- running

def _limit_memory():
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):
        pass


def preload() -> None:
    """Import what piper-opt imports, once, before forking."""
    import piper.tools.piper_opt  # noqa: F401
    from piper.passes import PASSES, pass_class

    for name in PASSES:
        pass_class(name)
    try:
        import torch  # noqa: F401  (result types of graph.aten ops are checked on meta tensors)
    except ImportError:
        pass


def start_fork(argv: list[str], out: str, err: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    rc = 1
    try:
        os.setpgid(0, 0)
        _limit_memory()
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        os.environ.pop("PIPER_DEBUG", None)
        from piper.tools.piper_opt import main

        sys.argv = ["piper-opt", *argv]
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what `python -m` would print
            traceback.print_exc()
            rc = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc if isinstance(rc, int) else 1)


def start_exec(argv: list[str], out: str, err: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.pop("PIPER_DEBUG", None)
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "piper.tools.piper_opt", *argv],
                                stdout=o, stderr=e, env=env, cwd=ROOT,
                                preexec_fn=_limit_memory, start_new_session=True)
    start_exec.procs[proc.pid] = proc
    return proc.pid


start_exec.procs = {}

HEAD = re.compile(r"^(?P<where>.*?): error: ")
CRASH = re.compile(r"error: pass .+? failed on '[^']*': \w+: ")  # piper-opt's pass manager


def classify(m: Mutant, rc: int | None, stderr: str) -> str:
    """ok (exit 0), rejected (exit 1, located), or the failure's class."""
    if rc is None:
        return "hang"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if "internal error" in stderr:
        return "internal_error"
    if rc not in (0, 1):
        return f"exit_{rc}"
    if CRASH.search(stderr):
        return "pass_crash"
    heads = [line for line in stderr.splitlines() if line.startswith("error:")]
    if heads:
        return "unlocated"
    if rc == 0:
        return "ok"
    first = next((line for line in stderr.splitlines() if line.strip()), "")
    found = HEAD.match(first)
    inputs = [m.input_path] + ([m.argv[0]] if m.source.level == "strategy" else [])
    if not found or not found.group("where").startswith(tuple(inputs)):
        return "unlocated"
    return "rejected"


FAILURES = ("hang", "traceback", "internal_error", "pass_crash", "unlocated")


def run_all(mutants: list[Mutant], folder: Path, timeout: float, jobs: int, runner: str,
            report=None) -> list[tuple[Mutant, str, int | None, str]]:
    start = start_fork if runner == "fork" else start_exec
    pending = list(reversed(mutants))
    running: dict[int, tuple[Mutant, float, str, str]] = {}
    results = []

    def finish(pid, rc):
        m, _, out, err = running.pop(pid)
        start_exec.procs.pop(pid, None)
        stderr = Path(err).read_text(errors="replace")
        cls = classify(m, rc, stderr)
        results.append((m, cls, rc, stderr))
        if report:
            report(m, cls, rc, stderr)
        for p in (out, err):
            os.unlink(p)
        if cls not in FAILURES and not cls.startswith("exit_"):
            os.unlink(m.input_path)

    while pending or running:
        while pending and len(running) < jobs:
            m = pending.pop()
            place(m, folder)
            out, err = str(folder / f"m{m.index:06d}.out"), str(folder / f"m{m.index:06d}.err")
            pid = start(m.argv, out, err)
            running[pid] = (m, time.monotonic(), out, err)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid in running:
            finish(pid, os.waitstatus_to_exitcode(status))
            continue
        now = time.monotonic()
        for pid, (m, began, _, _) in list(running.items()):
            if now - began > timeout:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                finish(pid, None)
        time.sleep(0.005)
    return sorted(results, key=lambda r: r[0].index)


def summarize(results, seed: int, elapsed: float, runner: str) -> dict:
    classes = Counter(cls for _, cls, _, _ in results)
    failures = [
        {"index": m.index, "class": cls, "exit": rc, "source": m.source.name,
         "mutations": m.mutations, "argv": m.argv,
         "stderr": stderr[-2000:], "reproduce": f"--seed {seed} --only {m.index}"}
        for m, cls, rc, stderr in results if cls in FAILURES or cls.startswith("exit_")]
    return {
        "mutants": len(results), "seed": seed, "runner": runner,
        "seconds": round(elapsed, 1),
        "classes": dict(sorted(classes.items())),
        "tracebacks": classes["traceback"], "internal_errors": classes["internal_error"],
        "hangs": classes["hang"], "pass_crashes": classes["pass_crash"],
        "unlocated": classes["unlocated"],
        "bad_exits": sum(n for c, n in classes.items() if c.startswith("exit_")),
        "by_mutation": dict(sorted(Counter(n for m, *_ in results for n in m.mutations).items())),
        "by_level": dict(sorted(Counter(m.source.level for m, *_ in results).items())),
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mutants", type=int, default=200, help="how many mutants (default 200)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds one piper-opt run may take before it counts as a hang")
    p.add_argument("--out", default=None,
                   help="folder for the summary (summary.json), a line per mutant "
                        "(mutants.jsonl) and the failing mutants (mutants/) "
                        "(default: a new temporary folder)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--runner", choices=("fork", "exec"), default="fork",
                   help="fork: one forked process per mutant running piper-opt's main "
                        "(fast); exec: a fresh `python -m piper.tools.piper_opt` per mutant")
    p.add_argument("--first", type=int, default=0, help="index of the first mutant")
    p.add_argument("--only", type=int, default=None,
                   help="rebuild mutant ONLY of --seed, print its command and run it")
    p.add_argument("--sources", default=None, metavar="REGEX",
                   help="mutate only the inputs whose path matches REGEX "
                        "(e.g. 'Inputs/' for the valid models and plans)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix="piper-fuzz-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = corpus()
    if args.sources:
        sources = [x for x in sources if re.search(args.sources, x.name)]
        if not sources:
            p.error(f"--sources {args.sources!r} matches no input")
    if args.only is not None:
        m = make_mutant(sources, args.seed, args.only, run_pipelines())
        place(m, out)
        print(f"mutant {m.index} of seed {args.seed}: {m.source.name} ({m.source.level}), "
              f"mutations {', '.join(m.mutations) or 'none'}")
        cmd = " ".join(["piper-opt"] + [a if re.fullmatch(r"[\w./=:-]+", a) else repr(a)
                                        for a in m.argv])
        print(f"$ {cmd}")
        proc = subprocess.run([sys.executable, "-m", "piper.tools.piper_opt", *m.argv],
                              capture_output=True, text=True, errors="replace",
                              timeout=args.timeout, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        sys.stdout.write(proc.stderr)
        cls = classify(m, proc.returncode, proc.stderr)
        print(f"exit {proc.returncode}: {cls}")
        return 1 if cls in FAILURES else 0

    if args.runner == "fork":
        preload()
    work = out / "mutants"
    work.mkdir(exist_ok=True)
    runs = run_pipelines()
    mutants = [make_mutant(sources, args.seed, i, runs)
               for i in range(args.first, args.first + args.mutants)]

    def report(m, cls, rc, stderr):
        if cls in FAILURES or cls.startswith("exit_"):
            print(f"FAIL {cls}: mutant {m.index} ({m.source.name}: "
                  f"{', '.join(m.mutations)}): {stderr.strip().splitlines()[-1:] or ['']}",
                  file=sys.stderr)

    began = time.monotonic()
    results = run_all(mutants, work, args.timeout, max(1, args.jobs), args.runner,
                      None if args.quiet else report)
    summary = summarize(results, args.seed, time.monotonic() - began, args.runner)
    with open(out / "mutants.jsonl", "w") as log:  # one line per mutant: what it did, what came back
        for m, cls, rc, stderr in results:
            first = next((x for x in stderr.splitlines() if x.strip()), "")
            log.write(json.dumps({"index": m.index, "source": m.source.name,
                                  "mutations": m.mutations, "pipeline": m.pipeline,
                                  "class": cls, "exit": rc, "stderr": first[:300]},
                                 ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    if not any(work.iterdir()):
        shutil.rmtree(work)
    bad = len(summary["failures"])
    print(f"{summary['mutants']} mutants in {summary['seconds']} s: {summary['classes']}; "
          f"{bad} failing; summary in {out / 'summary.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

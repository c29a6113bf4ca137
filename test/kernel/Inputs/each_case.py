"""Run piper-opt on each case of a file, cases separated by `// -----` lines.

piper-opt stops at the first error of a file, so invalid-IR tests feed it
one case at a time. This runs piper-opt's `main` in one process for all
cases (starting one process per case is slow) and prints, per case, a
`case N: exit RC` line and what piper-opt wrote to stderr. Extra arguments
are passed to piper-opt.
"""

import contextlib
import io
import os
import sys
import tempfile

from piper.tools.piper_opt import main

path, extra = sys.argv[1], sys.argv[2:]
cases = open(path).read().split("\n// -----\n")
with tempfile.TemporaryDirectory() as tmp:
    for i, text in enumerate(cases):
        case = os.path.join(tmp, f"case{i}.mlir")
        with open(case, "w") as f:
            f.write(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main([case, *extra])
        print(f"case {i}: exit {rc}")
        sys.stdout.write(err.getvalue().replace(tmp + os.sep, ""))

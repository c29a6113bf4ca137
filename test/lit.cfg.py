"""lit configuration: FileCheck regression tests of piper-opt, by level."""

import os
import shutil

import lit.formats

config.name = "piper"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["unit", "lit.cfg.py", "Inputs", "__pycache__"]

# Tools must come from the environment piper is installed in.
for tool in ("piper-opt", "piper-capture", "filecheck"):
    if shutil.which(tool) is None:
        lit_config.fatal(f"{tool} not found on PATH; install piper with its test extras")
config.substitutions.append(("%python", shutil.which("python3") or "python3"))
config.environment["PATH"] = os.environ.get("PATH", "")
for var in ("HOME", "TMPDIR", "PYTHONPATH", "TRITON_INTERPRET"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

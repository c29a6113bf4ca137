"""piper-plot: a run's loss and throughput curves from its metrics.jsonl.

    piper-plot RUN_DIR/metrics.jsonl [-o RUN_DIR/metrics.png]

Plots the training loss (and `val_loss`, when the run recorded one) and
the throughput per step, as `piper-run` / `plan.run` wrote them
(piper/runtime/progress.py). The picture goes beside the metrics file
unless `-o` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

from piper.diagnostics import PiperError
from piper.runtime.progress import read_metrics


def plot_metrics(path: str, out: str = "") -> str:
    """Write the picture of `path`'s metrics; return its path."""
    metrics = read_metrics(path)
    if "loss" not in metrics:
        raise PiperError(f"{path}: no loss records to plot")
    out = out or os.path.join(os.path.dirname(os.path.abspath(path)), "metrics.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = next((k for k in metrics if k.endswith("_per_s")), None)
    fig, axes = plt.subplots(1, 2 if rate else 1, figsize=(10 if rate else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    for name in ("loss", "val_loss"):
        if name in metrics:
            steps, values = zip(*metrics[name], strict=True)
            ax.plot([s + 1 for s in steps], values, label=name, marker="o" if name != "loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    if rate:
        steps, values = zip(*metrics[rate], strict=True)
        axes[0][1].plot([s + 1 for s in steps], values)
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylabel(rate.replace("_per_s", "/s"))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="piper-plot", description=__doc__.splitlines()[0])
    ap.add_argument("metrics", help="a metrics.jsonl written by piper-run or plan.run")
    ap.add_argument("-o", "--output", default="", help="the PNG (default: beside the metrics)")
    args = ap.parse_args(argv)
    try:
        print(f"wrote {plot_metrics(args.metrics, args.output)}")
    except PiperError as e:
        print(e.render(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

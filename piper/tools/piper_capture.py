"""piper-capture: capture one training step of an example model as graph IR.

    piper-capture gpt --layers 2 --dim 32 --optimizer adamw -o gpt.mlir

builds the example model (see `examples/`) with the given sizes, captures
forward, backward and the optimizer update with `piper.capture`, and writes
the module with op locations (module paths). Size options apply to the
models whose config has that field; every user error is one message on
stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from piper.tools.cli import Parser, UsageError, run_main

# option -> config field, for every size option any example understands
_SIZES = {
    "layers": "number of blocks (one 'PP' region each)",
    "dim": "model width",
    "hidden": "hidden width of each expert (moe)",
    "heads": "attention heads (gpt)",
    "vocab": "vocabulary size (gpt)",
    "seq": "sequence length (gpt)",
    "batch": "batch size (tokens for moe)",
    "classes": "output classes (mlp, moe)",
    "experts": "experts per layer (moe)",
    "top_k": "experts chosen per token (moe)",
}


def _parser(models: list[str]) -> argparse.ArgumentParser:
    p = Parser(
        prog="piper-capture",
        description="Capture a training step of an example model as Piper graph IR.",
    )
    p.add_argument("model", choices=models, help="example model")
    sizes = p.add_argument_group("model sizes (default: the example's config)")
    for name, text in _SIZES.items():
        sizes.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name, help=text)
    sizes.add_argument("--routing", choices=["dense", "routed"],
                       help="moe: dense gates (default) or routed slots with stacked experts")
    sizes.add_argument("--untied", action="store_true",
                       help="gpt: LM head with its own weight (default: tied to the embedding)")
    opt = p.add_argument_group("optimizer")
    opt.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    opt.add_argument("--lr", type=float, default=1e-2)
    opt.add_argument("--momentum", type=float, help="sgd momentum (default 0)")
    opt.add_argument("--weight-decay", type=float,
                     help="default 0 for sgd, 0.01 for adamw")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    p.add_argument("--no-locations", action="store_true", help="omit op locations")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    return p


def _config(example, args):
    fields = {f.name for f in dataclasses.fields(example.config)}
    given = {k: getattr(args, k) for k in _SIZES if getattr(args, k) is not None}
    if args.untied:
        given["tied"] = False
    if args.routing:
        given["routing"] = args.routing
    for k in given:
        if k not in fields:
            flag = {"tied": "--untied"}.get(k, f"--{k.replace('_', '-')}")
            raise UsageError(f"{flag} does not apply to model '{args.model}'")
    try:
        return example.config(**given)
    except ValueError as e:  # sizes that do not hold together
        raise UsageError(str(e)) from None


def _optimizer(args):
    if args.optimizer != "sgd" and args.momentum is not None:
        raise UsageError("--momentum applies to --optimizer sgd only")
    from piper.frontend.optim import SGD, AdamW  # lazy: imports torch

    if args.optimizer == "sgd":
        return SGD(lr=args.lr, momentum=args.momentum or 0.0,
                   weight_decay=args.weight_decay or 0.0)
    wd = 1e-2 if args.weight_decay is None else args.weight_decay
    return AdamW(lr=args.lr, weight_decay=wd)


def run(argv: list[str] | None = None) -> None:
    """Parse the command line, capture, write the IR (raises on errors)."""
    from examples import EXAMPLES

    args = _parser(sorted(EXAMPLES)).parse_args(argv)
    example = EXAMPLES[args.model]
    cfg = _config(example, args)
    if args.output != "-":  # a path that cannot be written fails before the capture
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            raise FileNotFoundError(2, "No such file or directory", args.output)

    spec = _optimizer(args)

    import piper  # imports torch: after every option is checked

    model = example.make(cfg, seed=args.seed)
    step = piper.capture(model, example.data(cfg), optimizer=spec)
    text = step.text(locations=not args.no_locations)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)


def main(argv: list[str] | None = None) -> int:
    return run_main("piper-capture", run, argv)


if __name__ == "__main__":
    sys.exit(main())

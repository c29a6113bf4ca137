"""The vocabulary of a training step's tasks, below every level that uses it.

A plan's tasks are named the same way everywhere: by stage, pass (F, B, BI,
BW, OPT), microbatch and the model's tags. This package holds what the
directives, the passes and the analyses all read, once each:

    filters.py    task and stage filters (`[PP=1 PASS=B]`, `0F3`, JSON form)
    orders.py     the order text grammar (`rank0: 0F0 0F1&1B0; rank1: ...`)
    schedules.py  named pipeline schedules as data, and their validation

It imports only piper.diagnostics and xDSL: dialects, passes, analyses and
directives import it, never the other way round.
"""

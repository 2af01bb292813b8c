"""Layer 2, machinery: what every run stands on. Imports only contracts.

``plugins`` (the plugin manager and registries), ``runstore`` (the run folder: crash-safe writes,
``events.jsonl``, its layout), ``runstate`` (the one reader of a run's events), ``ledger``,
``pricing`` and ``caps`` (what a run spends and its limits), ``fs`` (OS plumbing), ``astguard``
(a CPython thread bug worked around).
"""

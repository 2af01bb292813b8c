"""sia-runner-ray: run a per-item scaffold's items on a Ray cluster (``sia --runner ray``).

Modules: ``plugin`` (the entry point), ``runner`` (the orchestrator's side: batches of items as
Ray tasks, lost nodes, the gateway's address), ``node`` (what runs on a node: a batch in the
run's sandbox there) and ``relay`` (the gateway relay a batch's workers call on their node).
"""

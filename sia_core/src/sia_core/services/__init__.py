"""Layer 3, services: what the loop uses to carry out a step. Imports contracts and machinery.

``taskdir/`` (task folders: splits, labels, scoring), ``gateway/`` (the model gateway),
``runner/`` (scaffolds on items in a sandbox), ``agents/`` (the tool-using Meta/Feedback
agents), ``process_sandbox`` (the core's own sandbox), ``untrusted`` (reading what a scaffold
left), ``canary`` (reward-hacking canaries), ``estimate`` (a run's expected cost), ``summary``
(a run's per-generation table), ``serving`` (one threaded HTTP server lifecycle).
"""

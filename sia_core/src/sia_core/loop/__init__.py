"""Layer 4, the self-improvement loop. Imports contracts, machinery and services.

Each generation ``n`` is made of steps, each writing only inside ``gen_n/`` and then appending a
``step_finished`` event::

    propose   gen 1: Meta-Agent -> target_agent.py; gen n: Feedback-Agent on the incumbent
    train     (weights / both) LoRA RL through the frozen scaffold -> adapter
    run       the scaffold on dev + sealed test in the sandbox, through the model gateway
    score     dev -> metrics.json; test -> sealed/metrics_test.json (never read by a decision)
    gate      the generation becomes the incumbent if it beats the incumbent's dev score

A killed run resumes at the first unfinished step; finished steps are never redone.

:class:`~sia_core.loop.driver.Loop` combines one class per step: ``propose.py``, ``train.py``,
``trials.py`` (the run step), ``evaluate.py`` (score, final test), ``gate.py``; ``spending.py``
keeps the ledger and caps, ``base.py`` what they share, ``policy.py`` the lever and RL-objective
rules.
"""

from __future__ import annotations

from sia_core.contracts.config import RunConfig
from sia_core.loop.driver import STEPS, Loop
from sia_core.loop.spending import CapReached

__all__ = ["STEPS", "CapReached", "Loop", "RunConfig"]

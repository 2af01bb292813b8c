"""The loaded task (:class:`Task`): its core state, per-item and program scoring, redaction and
fingerprints put together, each from its own module."""

from __future__ import annotations

from sia_core.services.taskdir.fingerprint import Fingerprinting
from sia_core.services.taskdir.item_scoring import StepRewards
from sia_core.services.taskdir.program_scoring import ProgramScoring


class Task(StepRewards, ProgramScoring, Fingerprinting):
    """A loaded, valid task directory. Build it with :func:`load_task`."""

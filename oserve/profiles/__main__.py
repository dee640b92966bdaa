"""Regenerate the committed modelled tables: ``python -m oserve.profiles [OUT_DIR]``.

Writes ``a100-80gb-llama3-8b.json``, ``a100-80gb-llama2-70b.json`` and the combined
``a100-80gb-mixed.json`` (fp16/int8/int4 at TP 1/2/4/8 where they fit; SLO TTFT 1 s, TPOT 0.1 s).
"""

from __future__ import annotations

import sys
from pathlib import Path

from oserve.profiles.modelled import modelled_table


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "examples/profiles")
    out.mkdir(parents=True, exist_ok=True)
    for fname, models in (
        ("a100-80gb-llama3-8b.json", ["llama-3-8b"]),
        ("a100-80gb-llama2-70b.json", ["llama-2-70b"]),
        ("a100-80gb-mixed.json", ["llama-3-8b", "llama-2-70b"]),
    ):
        table = modelled_table(models, "a100-80gb")
        table.save(out / fname)
        print(f"{out / fname}: {len(table.variants)} variants")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

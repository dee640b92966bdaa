"""``oserve profile``: measure variants on a backend, model GPUs, or show a profile table.

    oserve profile CONFIG.yaml -o PROFILE.json          # measure (resumable)
    oserve profile --show PROFILE.json [--plot out.png] # print (and plot) a table
    oserve profile --modelled a100-80gb --arch llama-3-8b --arch llama-2-70b -o out.json

The table goes to stdout; logs (oserve's and the engines'), the progress bar and the sweep report
(candidates skipped or failed, classes no candidate serves within the SLO) go to stderr, ending
with the path of the JSON written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from oserve.errors import ConfigError, OserveError
from oserve.profiles.table import ProfileTable
from oserve.types import SLO

__all__ = ["register", "show_table", "plot_table"]

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="measure, model or show a profile (lookup) table",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="profile config YAML (see examples/profile-cpu.yaml)")
    p.add_argument("-o", "--output", help="profile table JSON to write")
    p.add_argument("--show", metavar="PROFILE", help="print a profile table")
    p.add_argument("--plot", metavar="PNG", help="with --show: plot capacity per class per variant")
    p.add_argument("--modelled", metavar="DEVICE", help="build a roofline-modelled table for DEVICE")
    p.add_argument("--arch", action="append", default=[], help="with --modelled: model name (repeatable)")
    p.add_argument("--precisions", default="fp16,int8,int4", help="with --modelled: comma list")
    p.add_argument("--tp", default="1,2,4,8", help="with --modelled: TP degrees, comma list")
    p.add_argument("--ttft-s", type=float, default=1.0, help="with --modelled: TTFT SLO, s")
    p.add_argument("--tpot-s", type=float, default=0.1, help="with --modelled: TPOT SLO, s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def show_table(table: ProfileTable) -> None:
    """Print ``table`` with rich: one row per variant, capacity (req/s) per class."""
    from rich.console import Console
    from rich.table import Table

    gib = 1024**3
    t = Table(title=f"{table.source} profile, {table.created}, SLO TTFT {table.slo.ttft_s} s / "
                    f"TPOT {table.slo.tpot_s} s ({table.hardware.get('device_type', '?')})")
    t.add_column("variant")
    t.add_column("dev", justify="right")
    t.add_column("weights GiB", justify="right")
    t.add_column("KV GiB", justify="right")
    t.add_column("start s", justify="right")
    t.add_column("fit err", justify="right")
    for c in table.class_names:
        t.add_column(f"{c}\nreq/s (B)", justify="right")
    for name, v in table.variants.items():
        err = v.iteration.fit_error
        t.add_row(
            name, str(v.devices_per_replica), f"{v.weights_bytes / gib:.1f}", f"{v.kv_cache_bytes / gib:.1f}",
            f"{v.start_time_s:.0f}", "-" if err is None else f"{err:.1%}",
            *(f"{v.classes[c].capacity_rps:.2f} ({v.classes[c].max_concurrency})" if c in v.classes else "-"
              for c in table.class_names),
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table to 80 columns
        console = Console(width=240)
    console.print(t)


def plot_table(table: ProfileTable, path: str | Path) -> None:
    """Grouped bar chart of capacity (req/s) per class per variant, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table.variants)
    x = np.arange(len(names))
    width = 0.8 / max(1, len(table.class_names))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4.5))
    for i, c in enumerate(table.class_names):
        ax.bar(x + i * width, [table.variants[n].classes[c].capacity_rps if c in table.variants[n].classes else 0
                               for n in names], width, label=c)
    ax.set_xticks(x + width * (len(table.class_names) - 1) / 2, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("capacity per replica (req/s)")
    ax.set_title(f"{table.source} profile: SLO TTFT {table.slo.ttft_s} s, TPOT {table.slo.tpot_s} s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _main(args: argparse.Namespace) -> int:
    # vLLM logs to stdout by default (its engine processes inherit this): keep stdout for the table.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        if args.show:
            table = ProfileTable.load(args.show)
            show_table(table)
            if args.plot:
                plot_table(table, args.plot)
                _note(f"oserve profile: wrote {args.plot}")
            return 0
        if not args.output:
            raise ConfigError("-o/--output is required", field="output", allowed="a JSON path")
        if args.modelled:
            from oserve.profiles.modelled import modelled_table

            if not args.arch:
                raise ConfigError("--modelled needs at least one --arch", field="arch")
            table = modelled_table(
                args.arch, args.modelled, precisions=args.precisions.split(","),
                tps=[int(x) for x in args.tp.split(",")], slo=SLO(ttft_s=args.ttft_s, tpot_s=args.tpot_s),
            )
            table.save(args.output)
            show_table(table)
            _note(f"oserve profile: wrote {Path(args.output).resolve()} ({len(table.variants)} variants)")
            return 0
        if not args.config:
            raise ConfigError("give a CONFIG, --show or --modelled", field="config")
        from oserve.backends.by_engine import EngineByVariant
        from oserve.compose import backend_for_engine
        from oserve.profiles.profiler import Profiler, load_profile_config

        config = load_profile_config(args.config)
        variants = config.build_variants()
        backend = EngineByVariant.from_variants(variants, lambda e: backend_for_engine(e, config.backend))
        profiler = Profiler(backend, config, progress=not args.no_progress)
        table, report = asyncio.run(profiler.sweep(args.output))
        show_table(table)
        for name, why in report.skipped.items():
            _note(f"oserve profile: skipped {name}: {why}")
        for name, why in report.failed.items():
            _note(f"oserve profile: FAILED {name}: {why}")
        for u in report.unmet:
            _note(f"oserve profile: no candidate meets the SLO for class {u.describe()}")
        _note(f"oserve profile: wrote {Path(args.output).resolve()} ({len(table.variants)} variants measured; "
              f"raw timings in {Path(args.output).resolve()}.sweep.json)")
        return 0
    except OserveError as exc:
        from oserve.cli.errors import report as report_error

        return report_error(exc)

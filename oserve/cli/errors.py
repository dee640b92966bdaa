"""One-line command-line errors: every ``oserve`` command reports a failure the same way.

On stderr, one line, exit status :data:`EXIT_CODE` (2, as argparse's usage errors)::

    oserve: error: examples/cpu.yaml:12: orchestrator.planer: unknown key; did you mean 'planner'? ...
    oserve: error: unknown planner 'mlip' (field planner.kind); did you mean 'milp'? allowed: milp, ...
    oserve: error: --window must be > 0 seconds, got -5; allowed: > 0 s

The YAML helpers that produce file-and-line messages live in :mod:`oserve.yaml_config`.
"""

from __future__ import annotations

import re

from oserve.errors import ConfigError, OserveError
from oserve.yaml_config import closest_first, did_you_mean, with_allowed

__all__ = ["PREFIX", "EXIT_CODE", "format_cli_error", "report"]

PREFIX = "oserve: error: "
#: Exit status of every command for a config, input or connection error.
EXIT_CODE = 2


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


_QUOTED = re.compile(r"""unknown [\w -]*?['"]([^'"]+)['"]""")


def format_cli_error(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc``: ``oserve: error: <message>``.

    A :class:`~oserve.errors.ConfigError` names its field; when it lists allowed values and the
    message quotes the unknown name, the closest allowed names come first, with a suggestion.
    """
    msg = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, ConfigError):
        field = getattr(exc, "field", None)
        allowed = getattr(exc, "allowed", None)
        if field and field not in msg and field != "<root>":
            msg += f" (field {field})"
        if allowed and allowed not in msg:
            names = [a.strip() for a in allowed.split(",") if a.strip()]
            m = _QUOTED.search(msg)
            if m and len(names) > 1:
                guess = did_you_mean(m.group(1), names)
                if guess:
                    msg += f"; did you mean {guess!r}?"
                names = closest_first(m.group(1), names)
            msg = with_allowed(msg, names)
    elif isinstance(exc, FileNotFoundError) and exc.filename:
        msg = f"no such file: {exc.filename}"
    elif not isinstance(exc, OserveError | RuntimeError):
        msg = f"{type(exc).__name__}: {msg}"
    return PREFIX + msg


def report(exc: BaseException) -> int:
    """Print :func:`format_cli_error` of ``exc`` on stderr and return :data:`EXIT_CODE`."""
    import sys

    print(format_cli_error(exc), file=sys.stderr)
    return EXIT_CODE

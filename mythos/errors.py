"""One error type for bad user input: CLIs print it as one line and exit 2, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user (a file, a key, a value). The message names what and what was expected."""


EXIT_USER_ERROR = 2


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script main so a UserError becomes `error: <msg>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR)
        return 0 if rc is None else rc

    return wrapped

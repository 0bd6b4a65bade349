"""Errors a command reports to the user as one message, and the exit codes it returns."""

from __future__ import annotations

import functools
import logging
from typing import Callable

logger = logging.getLogger("reformer_cli")

EXIT_OK = 0
EXIT_FAILED = 1  # invalid input, a missing or damaged file, or a failed check
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


class CommandError(Exception):
    """A problem with the user's input or files, with a message stating what was wrong and how to fix it."""


def reports_errors(command: Callable[..., int]) -> Callable[..., int]:
    """Wrap a subcommand: a CommandError is logged as one message and returns EXIT_FAILED, Ctrl-C returns EXIT_INTERRUPTED."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except CommandError as error:
            logger.error("%s", error)
            return EXIT_FAILED
        except KeyboardInterrupt:
            # Training handles Ctrl-C itself and saves a checkpoint; this catches it anywhere else.
            logger.warning("Interrupted by Ctrl-C; files already written are complete, nothing is half-written.")
            return EXIT_INTERRUPTED

    return wrapper

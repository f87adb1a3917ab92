"""lightray's logging: everything the library says goes through the
``logging.getLogger("lightray")`` tree (``lightray.agent``, ``lightray.control``,
``lightray.refusals``, ...), so a user can tune or silence it like any library.

    driver:  init(logging_level=...)  ── sets the "lightray" logger's level; adds a
             stderr handler only if the program configured none (else its own
             handlers get the records)
             the embedded agent ◀── LIGHTRAY_LOG_LEVEL (the same level) in its environment
    agent:   configure_process("lightray-agent") at start: a stderr handler, level from
             LIGHTRAY_LOG_LEVEL (default WARNING); its forked workers inherit it

Processes lightray starts (agents and their workers) write each record as one
``os.write`` of one line, ``<who>: [warning: ]<message>``, so lines of processes sharing a
terminal or a log file never interleave mid-line.
"""
from __future__ import annotations

import logging
import os
import sys

from .config import LOG_LEVEL_ENV

LOGGER_NAME = "lightray"
DEFAULT_LEVEL = logging.WARNING
_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger(LOGGER_NAME)

# A record whose message names its process already ("lightray-agent: ...",
# lightray.transport.guard) has this attribute set (logging's extra=).
PREFIXED = "lightray_prefixed"


def get_logger(part: str = "") -> logging.Logger:
    """The "lightray" logger, or its child "lightray.<part>"."""
    return logging.getLogger(f"{LOGGER_NAME}.{part}") if part else logger


def parse_level(level) -> int:
    """A logging level from an int or a name ("info", "WARNING", ...);
    ValueError naming the valid ones otherwise."""
    if isinstance(level, bool):
        raise ValueError(f"logging level must be a level name or int, got {level!r}")
    if isinstance(level, int):
        return level
    if isinstance(level, str) and level.strip().upper() in _LEVEL_NAMES:
        return logging.getLevelName(level.strip().upper())
    if isinstance(level, str) and level.strip().isdigit():
        return int(level.strip())
    raise ValueError(f"logging level must be one of {', '.join(_LEVEL_NAMES)} (or an int), "
                     f"got {level!r}")


def level_from_env(default: int = DEFAULT_LEVEL) -> int:
    """LIGHTRAY_LOG_LEVEL, else default; a bad value is named in the error."""
    value = os.environ.get(LOG_LEVEL_ENV, "")
    if not value:
        return default
    try:
        return parse_level(value)
    except ValueError as error:
        raise ValueError(f"{LOG_LEVEL_ENV}: {error}") from None


class LineHandler(logging.Handler):
    """One os.write of one line per record, to a file descriptor (stderr)."""

    def __init__(self, who: str, fd: int | None = None):
        super().__init__()
        self.who = who
        self.fd = fd
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", "\n  ")
            if not getattr(record, PREFIXED, False):
                if record.levelno == logging.WARNING:
                    # (an error is the process's last word: said as it is)
                    text = f"warning: {text}"
                text = f"{self.who}: {text}"
            fd = self.fd if self.fd is not None else sys.stderr.fileno()
            os.write(fd, f"{text}\n".encode("utf-8", "replace"))
        except (OSError, ValueError):
            pass   # no log to write to: lightray works on


def configure_process(who: str, level=None) -> None:
    """In a process lightray owns (an agent and its workers): records of the
    "lightray" loggers at level (default: LIGHTRAY_LOG_LEVEL, else WARNING)
    go to stderr as "<who>: message" lines, and only there."""
    logger.setLevel(parse_level(level) if level is not None else level_from_env())
    for handler in list(logger.handlers):
        if isinstance(handler, LineHandler):
            logger.removeHandler(handler)
    logger.addHandler(LineHandler(who))
    logger.propagate = False


def configure_driver(level) -> int:
    """init(logging_level=...): the "lightray" logger's level in this process;
    a stderr handler only when the program has configured no logging (its
    own handlers, if any, receive lightray's records). The level, as an int."""
    level = parse_level(level)
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(LineHandler("lightray"))
    return level

"""lightray speaks through logging.getLogger("lightray"): init(logging_level=...)
and LIGHTRAY_LOG_LEVEL set how much, here and in the agent init starts."""
import logging
import os
import re
import subprocess
import sys

import pytest

import lightray
from lightray import log
from lightray.store.spill import remove_files
from lightray.transport.guard import RefusalLog

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def lightray_logger_restored():
    logger = logging.getLogger("lightray")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


@lightray.remote
def add(a, b):
    return a + b


# An agent at DEBUG logs every state change of a task ("task 1a2b3c4d: ... -> ...").
TRANSITION = re.compile(r"lightray-agent: task [0-9a-f]{8}: \S+ -> ")


def test_init_logging_level_debug_reaches_the_agent_it_starts(capfd):
    lightray.init(num_cpus=1, logging_level="DEBUG")
    assert lightray.get(add.remote(1, 2), timeout=30) == 3
    lightray.shutdown()
    assert TRANSITION.search(capfd.readouterr().err)


def test_the_agent_says_nothing_at_the_default_level(capfd, monkeypatch):
    monkeypatch.delenv("LIGHTRAY_LOG_LEVEL", raising=False)
    lightray.init(num_cpus=1)
    assert lightray.get(add.remote(1, 2), timeout=30) == 3
    lightray.shutdown()
    assert not TRANSITION.search(capfd.readouterr().err)


def test_lightray_log_level_sets_the_agent_s_level(capfd, monkeypatch):
    monkeypatch.setenv("LIGHTRAY_LOG_LEVEL", "debug")
    lightray.init(num_cpus=1)
    assert logging.getLogger("lightray").level == logging.DEBUG
    assert lightray.get(add.remote(2, 3), timeout=30) == 5
    lightray.shutdown()
    assert TRANSITION.search(capfd.readouterr().err)


def test_a_bad_logging_level_is_refused_naming_the_valid_ones():
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        lightray.init(num_cpus=1, logging_level="loud")
    assert not lightray.is_initialized()


def test_an_agent_with_a_bad_lightray_log_level_exits_saying_why():
    env = dict(os.environ, LIGHTRAY_LOG_LEVEL="loud", PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-m", "lightray.agent", "--num-cpus", "1"],
                          capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "LIGHTRAY_LOG_LEVEL" in done.stderr and "Traceback" not in done.stderr


def test_refusals_in_a_driver_go_to_the_lightray_logger_and_can_be_silenced(caplog):
    refusals = RefusalLog("lightray stream caller")
    with caplog.at_level(logging.WARNING, logger="lightray"):
        refusals.note("key", "dropped a malformed answer")
    (record,) = caplog.records
    assert record.name == "lightray.refusals"
    assert record.getMessage() == "lightray stream caller: dropped a malformed answer"
    caplog.clear()
    logging.getLogger("lightray").setLevel(logging.ERROR)
    refusals.note("other key", "dropped another")
    assert caplog.records == []


def test_a_spill_file_that_cannot_be_removed_is_a_warning_of_the_lightray_logger(
        tmp_path, caplog):
    directory = tmp_path / "not-a-file"
    directory.mkdir()
    with caplog.at_level(logging.WARNING, logger="lightray"):
        remove_files([str(directory)])
    (record,) = caplog.records
    assert record.name == "lightray.spill" and "could not remove spill file" in record.message


def test_lines_of_lightray_processes_are_one_line_each_and_name_the_process():
    read_end, write_end = os.pipe()
    handler = log.LineHandler("lightray-agent", fd=write_end)
    logger = logging.getLogger("lightray.test")
    logger.addHandler(handler)
    try:
        logger.warning("first\nsecond")
        logger.warning("already named", extra={log.PREFIXED: True})
    finally:
        logger.removeHandler(handler)
        os.close(write_end)
    with os.fdopen(read_end) as reader:
        assert reader.read() == "lightray-agent: warning: first\n  second\nalready named\n"


def test_the_library_never_prints_to_stderr_itself():
    """Only the command lines (lightray and its subcommands, lightray-agent) print their own output."""
    offenders = []
    package = os.path.join(REPO_ROOT, "lightray")
    allowed = {os.path.join(package, *parts) for parts in (
        ("cli.py",), ("agent", "cli.py"), ("jobs", "cli.py"), ("observe", "cli.py"))}
    assert all(os.path.exists(path) for path in allowed), "a command-line module moved"
    for folder, _dirs, files in os.walk(package):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path not in allowed:
                with open(path) as source:
                    for number, line in enumerate(source, 1):
                        if "file=sys.stderr" in line or "traceback.print_exc" in line:
                            offenders.append(f"{path}:{number}")
    assert offenders == []

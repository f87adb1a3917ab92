"""``lightray logs``: the workers' log files (what tasks printed), from any node.

Run in-process through lightray.cli.main where a test reads its output, as
a subprocess (as a user runs it) for --follow and Ctrl-C.
"""
import os
import signal
import subprocess
import sys

import pytest
from conftest import wait_for

import lightray
from lightray import NodeAffinity, api, cli
from lightray.output.lines import prefix

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@lightray.remote
def chatty(text):
    print(text)
    return os.getpid()


@lightray.remote
class Talker:
    def say(self, text):
        print(text)
        return os.getpid()


@pytest.fixture
def embedded():
    lightray.init(num_cpus=1, log_to_driver=False)
    try:
        yield f"ipc://{api._runtime.session_dir}/agent.sock"
    finally:
        lightray.shutdown()


def logs(capsys, *args):
    """(exit status, stdout, stderr) of `lightray logs ARGS` run in this process."""
    capsys.readouterr()
    status = cli.main(["logs", *args])
    out, err = capsys.readouterr()
    return status, out, err


def logs_until(capsys, text, *args):
    """`lightray logs ARGS`, run again until its output holds text (the
    worker writes its log file as the task prints, the command reads it)."""
    seen = {}

    def check():
        seen["status"], seen["out"], seen["err"] = logs(capsys, *args)
        return text in seen["out"]

    wait_for(check, 15.0)
    return seen["status"], seen["out"], seen["err"]


def test_logs_of_a_worker_show_the_lines_its_tasks_printed(embedded, capsys):
    pid = lightray.get(chatty.remote("first line"))
    lightray.get(chatty.remote("second line"))
    node = lightray.get_runtime_context().node_id
    status, out, err = logs_until(capsys, "second line", "--address", embedded,
                                  "--worker", str(pid))
    assert status == 0 and err == ""
    assert f"{prefix('chatty', pid, node)} first line" in out.splitlines()
    status, out, _ = logs(capsys, "--address", embedded)   # the list of log files
    assert status == 0 and str(pid) in out and out.splitlines()[0].split()[:2] == ["NODE", "PID"]


def test_logs_of_a_named_actor(embedded, capsys):
    talker = Talker.options(name="talker").remote()
    pid = lightray.get(talker.say.remote("the actor speaks"))
    status, out, _ = logs_until(capsys, "the actor speaks", "--address", embedded,
                                "--actor", "talker")
    assert status == 0
    assert f"{prefix('Talker.say', pid, lightray.get_runtime_context().node_id)} " \
           "the actor speaks" in out.splitlines()


def test_logs_of_a_worker_on_another_node(own_cluster, capsys):
    own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    lightray.init(address=own_cluster.head.address, log_to_driver=False)
    own_cluster.wait_for_nodes(2)
    pid = lightray.get(chatty.options(scheduling_strategy=NodeAffinity(other.node_id))
                       .remote("printed over there"))
    line = f"{prefix('chatty', pid, other.node_id)} printed over there"
    address = own_cluster.head.address
    status, out, _ = logs_until(capsys, line, "--address", address, "--node",
                                other.node_id[:6], "--worker", str(pid))
    assert status == 0 and line in out.splitlines()
    status, out, _ = logs(capsys, "--address", address, "--worker", str(pid))   # any node
    assert status == 0 and line in out.splitlines()
    status, out, _ = logs(capsys, "--address", address)
    assert any(row.split()[:2] == [other.node_id, str(pid)] for row in out.splitlines())
    status, _, err = logs(capsys, "--address", address, "--node", "zzzz", "--worker", "1")
    assert status == 1 and "no alive node has an id starting 'zzzz'" in err


def test_logs_follow_prints_new_lines_until_ctrl_c(embedded):
    talker = Talker.options(name="follow-me").remote()
    lightray.get(talker.say.remote("before following"))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "lightray.cli", "logs", "--address", embedded,
         "--actor", "follow-me", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "before following" in process.stdout.readline()
        lightray.get(talker.say.remote("while following"))
        assert "while following" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_logs_user_errors_are_one_line_messages(embedded, capsys):
    status, out, err = logs(capsys, "--address", embedded, "--worker", "999999")
    assert status == 1 and out == ""
    assert err.startswith("lightray logs: no log of worker 999999 found")
    assert len(err.splitlines()) == 1
    status, _, err = logs(capsys, "--address", embedded, "--actor", "nobody")
    assert status == 1 and "no actor named 'nobody'" in err
    status, _, err = logs(capsys, "--address", embedded, "--follow")
    assert status == 1 and "--follow needs --worker PID or --actor NAME" in err
    with pytest.raises(SystemExit):   # argparse: one or the other
        cli.main(["logs", "--worker", "1", "--actor", "a"])


def test_logs_into_a_closed_pipe_exits_quietly(embedded):
    pid = lightray.get(chatty.remote("x" * 200))
    for _ in range(500):   # more than a pipe holds: the reader goes away mid-write
        lightray.get(chatty.remote("y" * 200))
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        f"{sys.executable} -m lightray.cli logs --address {embedded} --worker {pid} | head -1",
        shell=True, capture_output=True, text=True, env=env, timeout=90)
    assert result.stdout.count("\n") == 1 and "x" * 200 in result.stdout
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr

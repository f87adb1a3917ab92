"""Jobs: `lightray job submit|status|logs|stop|list` and lightray.jobs against real agents.

A job's driver is started by the supervisor actor on the submitting node's
agent, in the shipped working directory, and attaches to the cluster with
plain ``lightray.init()``; its record is in the replicated control store,
its output in the node's session directory.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import pid_alive, wait_for

import lightray
import lightray.jobs as jobs
from lightray import cli

pytestmark = pytest.mark.timeout(180)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""\
    import os, sys
    import lightray

    lightray.init()

    @lightray.remote
    def where():
        return os.environ.get("JOB_GREETING"), os.path.exists("data.txt")

    print("cwd has data:", open("data.txt").read().strip())
    print("task sees:", lightray.get(where.remote(), timeout=60))
    print("nodes:", len(lightray.nodes()))
    print("to stderr", file=sys.stderr)
    sys.exit(int(os.environ.get("JOB_EXIT", "0")))
""")

SLEEPER = textwrap.dedent("""\
    import signal, sys, time
    print("started", flush=True)
    if len(sys.argv) > 1 and sys.argv[1] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
""")


def cli_env(**extra):
    env = dict(os.environ)
    env.pop("LIGHTRAY_ADDRESS", None)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args, timeout=120, **env):
    return subprocess.run([sys.executable, "-m", "lightray.cli", *args], check=False,
                          capture_output=True, text=True, env=cli_env(**env), timeout=timeout,
                          cwd=REPO_ROOT)


@pytest.fixture
def project(tmp_path):
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "script.py").write_text(SCRIPT)
    (directory / "sleeper.py").write_text(SLEEPER)
    (directory / "data.txt").write_text("shipped\n")
    return directory


@pytest.fixture
def two_nodes(own_cluster):
    head = own_cluster.add_node(head=True)
    other = own_cluster.add_node()
    lightray.init(address=head.address)
    own_cluster.wait_for_nodes(2)
    lightray.shutdown()
    return head, other


def session_dir_of(node):
    return next(r["session_dir"] for r in cli.running_agent_records()
                if r["node_id"] == node.node_id)


def submitted_id(stdout):
    line = next(line for line in stdout.splitlines() if line.startswith("submitted job "))
    return line.split()[-1]


# ------------------------------------------------------------------ the CLI

def test_submit_runs_the_entrypoint_in_the_shipped_working_dir_attached_to_the_cluster(
        two_nodes, project):
    head, _ = two_nodes
    result = run_cli("job", "submit", "--address", head.address, "--working-dir", str(project),
                     "--runtime-env-json", '{"env_vars": {"JOB_GREETING": "hello"}}',
                     "--", "python", "script.py")
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "cwd has data: shipped" in out
    assert "task sees: ('hello', True)" in out     # the job's runtime_env reached its tasks
    assert "nodes: 2" in out                       # attached to the cluster, not embedded
    assert "to stderr" in out
    job_id = submitted_id(out)
    assert f"job {job_id} SUCCEEDED" in out

    status = run_cli("job", "status", job_id, "--address", head.address)
    assert status.returncode == 0, status.stderr
    assert f"job {job_id}: SUCCEEDED" in status.stdout
    assert "exit_code    0" in status.stdout
    logs = run_cli("job", "logs", job_id, "--address", head.address)
    assert logs.returncode == 0, logs.stderr
    assert "cwd has data: shipped" in logs.stdout and "to stderr" in logs.stdout
    listing = run_cli("job", "list", "--address", head.address)
    assert job_id in listing.stdout and "SUCCEEDED" in listing.stdout


def test_a_failing_job_is_failed_with_its_exit_code_and_the_submit_exits_1(two_nodes, project):
    head, _ = two_nodes
    result = run_cli("job", "submit", "--address", head.address, "--working-dir", str(project),
                     "--runtime-env-json", '{"env_vars": {"JOB_EXIT": "3"}}',
                     "--", "python", "script.py")
    assert result.returncode == 1, result.stderr + result.stdout
    job_id = submitted_id(result.stdout)
    assert f"job {job_id} FAILED: the driver exited with code 3" in result.stdout
    lightray.init(address=head.address)
    info = jobs.get_job_info(job_id)
    assert (info["status"], info["exit_code"]) == ("FAILED", 3)


def test_the_record_and_log_of_a_job_are_readable_from_another_node(two_nodes, project):
    head, other = two_nodes
    result = run_cli("job", "submit", "--address", head.address, "--working-dir", str(project),
                     "--no-wait", "--", "python", "sleeper.py")
    assert result.returncode == 0, result.stderr
    job_id = submitted_id(result.stdout)
    lightray.init(address=other.address)
    assert wait_for(lambda: "started" in jobs.get_job_logs(job_id), timeout=30)
    info = jobs.get_job_info(job_id)
    assert info["status"] == "RUNNING"
    assert info["node_id"] == head.node_id
    assert info["entrypoint"] == "python sleeper.py"
    stopped = run_cli("job", "stop", job_id, "--address", other.address)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped job {job_id}" in stopped.stdout
    assert jobs.get_job_status(job_id) == "STOPPED"
    assert not pid_alive(info["pid"])


def test_job_logs_follow_prints_the_output_until_the_job_ends(two_nodes, project):
    head, _ = two_nodes
    (project / "counter.py").write_text(
        "import time\nfor n in range(5):\n    print('line', n)\n    time.sleep(0.2)\n")
    result = run_cli("job", "submit", "--address", head.address, "--working-dir", str(project),
                     "--no-wait", "--", "python", "counter.py")
    job_id = submitted_id(result.stdout)
    follow = run_cli("job", "logs", job_id, "--follow", "--address", head.address)
    assert follow.returncode == 0, follow.stderr
    assert [f"line {n}" for n in range(5)] == follow.stdout.splitlines()


def test_unknown_job_id_and_missing_entrypoint_are_clear_errors(two_nodes, project):
    head, _ = two_nodes
    for command in ("status", "logs", "stop"):
        result = run_cli("job", command, "no_such_job", "--address", head.address)
        assert result.returncode == 1
        assert "no job with id 'no_such_job'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    missing = run_cli("job", "submit", "--address", head.address, "--working-dir", str(project))
    assert missing.returncode == 1
    assert "no entrypoint given" in missing.stderr
    unknown = run_cli("job", "submit", "--address", head.address, "--", "no-such-program-x")
    assert unknown.returncode == 1
    assert "'no-such-program-x' was not found" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad_env = run_cli("job", "submit", "--address", head.address, "--runtime-env-json",
                      '{"conda": "x"}', "--", "python", "-c", "pass")
    assert bad_env.returncode == 1 and "not supported" in bad_env.stderr


# ------------------------------------------------------------------ the Python API

def test_a_job_whose_driver_is_sigkilled_is_failed(two_nodes, project):
    head, _ = two_nodes
    lightray.init(address=head.address)
    job_id = jobs.submit_job("python sleeper.py", working_dir=str(project))
    assert wait_for(lambda: "started" in jobs.get_job_logs(job_id), timeout=30)
    pid = jobs.get_job_info(job_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: jobs.get_job_status(job_id) == "FAILED", timeout=30)
    info = jobs.get_job_info(job_id)
    assert info["message"] == "the driver was killed by signal SIGKILL"
    assert info["exit_code"] == -signal.SIGKILL
    assert jobs.stop_job(job_id) is False       # it had ended


def test_stop_sigkills_a_job_that_ignores_sigterm_after_the_timeout(two_nodes, project):
    head, _ = two_nodes
    lightray.init(address=head.address)
    job_id = jobs.submit_job(["python", "sleeper.py", "ignore-term"],
                             working_dir=str(project))
    assert wait_for(lambda: "started" in jobs.get_job_logs(job_id), timeout=30)
    pid = jobs.get_job_info(job_id)["pid"]
    assert jobs.stop_job(job_id, timeout=0.5) is True
    info = jobs.get_job_info(job_id)
    assert info["status"] == "STOPPED"
    assert info["exit_code"] == -signal.SIGKILL
    assert not pid_alive(pid)
    assert [r["job_id"] for r in jobs.list_jobs()] == [job_id]


def test_submit_job_refuses_bad_input_naming_it(two_nodes, project):
    head, _ = two_nodes
    lightray.init(address=head.address)
    with pytest.raises(ValueError, match="no entrypoint given"):
        jobs.submit_job("")
    with pytest.raises(TypeError, match="entrypoint must be a command line"):
        jobs.submit_job(42)
    with pytest.raises(ValueError, match="unknown submit_job.runtime_env=.... key 'pipx'"):
        jobs.submit_job("python -c pass", runtime_env={"pipx": []})
    with pytest.raises(jobs.JobNotFoundError, match="'nope'"):
        jobs.get_job_status("nope")
    job_id = jobs.submit_job("python -c pass", job_id="mine-1")
    assert job_id == "mine-1"
    with pytest.raises(ValueError, match="a job with id 'mine-1' exists already"):
        jobs.submit_job("python -c pass", job_id="mine-1")
    assert wait_for(lambda: jobs.get_job_status("mine-1") == "SUCCEEDED", timeout=30)


def test_a_job_dies_with_its_node_and_then_shows_failed_on_the_others(own_cluster, project):
    head = own_cluster.add_node(head=True)
    own_cluster.add_node()
    doomed = own_cluster.add_node()
    lightray.init(address=doomed.address)
    own_cluster.wait_for_nodes(3)
    job_id = jobs.submit_job("python sleeper.py", working_dir=str(project))
    assert wait_for(lambda: "started" in jobs.get_job_logs(job_id), timeout=30)
    info = jobs.get_job_info(job_id)
    assert info["node_id"] == doomed.node_id
    lightray.shutdown()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.process.wait(timeout=30)
    assert wait_for(lambda: not pid_alive(info["pid"]), timeout=30)   # no orphaned driver
    lightray.init(address=head.address)
    assert wait_for(lambda: jobs.get_job_status(job_id) == "FAILED", timeout=60)
    assert "supervisor is gone" in jobs.get_job_info(job_id)["message"]


def test_job_commands_check_the_cluster_key_given(two_nodes, tmp_path):
    head, _ = two_nodes
    other_key = tmp_path / "other.key"
    made = subprocess.run([sys.executable, "-m", "lightray.agent", "--make-cluster-key",
                           str(other_key)], capture_output=True, text=True, env=cli_env(),
                          timeout=60)
    assert made.returncode == 0, made.stderr
    refused = run_cli("job", "list", "--address", head.address, "--cluster-key", str(other_key))
    assert refused.returncode == 1
    assert f"the cluster key {other_key}" in refused.stderr and "is not the key" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    own_key = json.load(open(os.path.join(session_dir_of(head), "agent.json")))[
        "cluster_key_file"]
    listed = run_cli("job", "list", "--address", head.address, "--cluster-key", own_key)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no jobs"
    for command in ("submit", "status", "logs", "stop", "list"):
        helped = run_cli("job", command, "--help")
        assert "--address" in helped.stdout and "--cluster-key" in helped.stdout, command


def test_the_job_log_is_kept_in_the_session_directory_of_its_node(two_nodes, project):
    head, _ = two_nodes
    lightray.init(address=head.address)
    job_id = jobs.submit_job("python -c \"print('kept')\"")
    assert wait_for(lambda: jobs.get_job_status(job_id) == "SUCCEEDED", timeout=30)
    log_path = jobs.get_job_info(job_id)["log_path"]
    assert log_path == os.path.join(session_dir_of(head), "jobs", f"{job_id}.log")
    assert open(log_path).read() == "kept\n"
    assert jobs.get_job_logs(job_id) == "kept\n"


def test_py_modules_of_a_job_import_in_its_driver_and_in_its_tasks(two_nodes, tmp_path):
    head, _ = two_nodes
    package = tmp_path / "libs" / "jobhelper"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WORD = 'from-py-modules'\n")
    script = tmp_path / "work"
    script.mkdir()
    (script / "main.py").write_text(textwrap.dedent("""\
        import lightray, jobhelper
        lightray.init()

        @lightray.remote
        def word():
            import jobhelper
            return jobhelper.WORD

        print(jobhelper.WORD, lightray.get(word.remote(), timeout=60))
    """))
    lightray.init(address=head.address)
    job_id = jobs.submit_job("python main.py", working_dir=str(script),
                             runtime_env={"py_modules": [str(package)]})
    assert wait_for(lambda: jobs.get_job_status(job_id) in ("SUCCEEDED", "FAILED"), timeout=60)
    assert jobs.get_job_logs(job_id) == "from-py-modules from-py-modules\n"
    assert jobs.get_job_status(job_id) == "SUCCEEDED"


def test_a_killed_supervisor_takes_its_driver_along_and_its_log_stays_readable_here(
        two_nodes, project):
    head, _ = two_nodes
    lightray.init(address=head.address)
    job_id = jobs.submit_job("python sleeper.py", working_dir=str(project))
    assert wait_for(lambda: "started" in jobs.get_job_logs(job_id), timeout=30)
    pid = jobs.get_job_info(job_id)["pid"]
    supervisor = lightray.get_actor(f"supervisor:{job_id}", namespace="lightray/jobs")
    lightray.kill(supervisor)
    assert wait_for(lambda: not pid_alive(pid), timeout=30)
    assert wait_for(lambda: jobs.get_job_status(job_id) == "FAILED", timeout=30)
    assert "supervisor is gone" in jobs.get_job_info(job_id)["message"]
    assert jobs.get_job_logs(job_id) == "started\n"     # from the file, on this host


def test_a_job_of_an_embedded_runtime_attaches_to_it_with_address_auto():
    lightray.init(num_cpus=1)
    job_id = jobs.submit_job(["python", "-c", "import lightray; lightray.init(address='auto'); "
                              "print(lightray.get(lightray.put(5)), len(lightray.nodes()))"])
    assert "".join(jobs.tail_job_logs(job_id, timeout=60)) == "5 1\n"
    assert jobs.get_job_status(job_id) == "SUCCEEDED"


def test_an_ended_job_s_supervisor_retires_and_its_log_s_tail_stays_in_the_control_store(
        own_cluster):
    linger = {"LIGHTRAY_JOB_SUPERVISOR_LINGER": "0.2"}
    head = own_cluster.add_node(head=True, env=linger)
    other = own_cluster.add_node(env=linger)
    lightray.init(address=other.address)
    own_cluster.wait_for_nodes(2)
    lightray.shutdown()
    lightray.init(address=head.address)
    # 1.5 MB of output: more than the 1 MiB the control store keeps.
    job_id = jobs.submit_job(["python", "-c", "print('x' * 1_500_000); print('end')"])
    assert wait_for(lambda: jobs.get_job_status(job_id) == "SUCCEEDED", timeout=30)

    def supervisor_gone():
        try:
            lightray.get_actor(f"supervisor:{job_id}", namespace="lightray/jobs")
        except ValueError:
            return True
        return False
    assert wait_for(supervisor_gone, timeout=30)   # no process left per ended job
    whole = "x" * 1_500_000 + "\nend\n"
    assert jobs.get_job_logs(job_id) == whole      # the file, on this host
    lightray.shutdown()
    # Elsewhere (the file removed, as on another host): the tail the store kept.
    lightray.init(address=other.address)
    log_path = jobs.get_job_info(job_id)["log_path"]
    os.unlink(log_path)
    kept = jobs.get_job_logs(job_id)
    skipped = len(whole) - (1 << 20)
    assert kept == (f"[lightray: the first {skipped} bytes of this log are kept only on node "
                    f"{head.node_id}]\n" + whole[skipped:])
    assert "".join(jobs.tail_job_logs(job_id, timeout=30)) == kept


def test_pip_requirements_of_a_job_import_in_its_driver_and_in_its_tasks(two_nodes, tmp_path):
    from test_runtime_env import tiny_wheel

    head, _ = two_nodes
    wheels = tmp_path / "wheels"
    tiny_wheel(wheels, name="lr_jobwheel")
    lightray.init(address=head.address)
    script = textwrap.dedent("""\
        import lightray, lr_jobwheel
        lightray.init()

        @lightray.remote
        def value():
            import lr_jobwheel
            return lr_jobwheel.VALUE

        print(lr_jobwheel.VALUE, "|", lightray.get(value.remote(), timeout=120))
    """)
    job_id = jobs.submit_job(["python", "-c", script], runtime_env={
        "pip": ["--no-index", f"--find-links {wheels}", "lr_jobwheel==0.1"]})
    assert wait_for(lambda: jobs.get_job_status(job_id) in ("SUCCEEDED", "FAILED"),
                    timeout=240)
    assert jobs.get_job_logs(job_id) == "from the wheel | from the wheel\n"


def test_a_job_stopped_while_pending_is_never_started_by_its_supervisor(two_nodes, tmp_path):
    from lightray.jobs import records
    from lightray.jobs.supervisor import JobSupervisor

    head, _ = two_nodes
    lightray.init(address=head.address)
    marker = tmp_path / "ran"
    record = records.new_record("pending-1", "touch", head.node_id, 0.0, None)
    assert records.write(record, only_new=True)
    assert jobs.get_job_status("pending-1") == "PENDING"
    assert jobs.stop_job("pending-1") is True
    assert jobs.get_job_status("pending-1") == "STOPPED"
    supervisor = lightray.remote(JobSupervisor).options(
        name=records.supervisor_name("pending-1"), namespace=records.NAMESPACE,
        num_cpus=0).remote(record, ["touch", str(marker)], None)
    started = lightray.get(supervisor.start.remote(), timeout=60)
    assert (started["status"], started["pid"]) == ("STOPPED", None)
    assert not marker.exists()
    assert jobs.stop_job("pending-1") is False

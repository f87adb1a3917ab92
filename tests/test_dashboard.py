"""The dashboard: its server, its guard, and its page in a real headless Chromium.

The browser tests drive the system's Chromium through Selenium, pointed at
/usr/bin/chromium and /usr/bin/chromedriver (.ci/run installs them); nothing is
downloaded. They are skipped only where that browser is not installed.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import lightray
from lightray.dashboard import history, server, source
from lightray.transport.keys import new_cluster_key
from conftest import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MIB = 1 << 20


def fetch(url, headers=None):
    """(status, body bytes) of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def snapshot_of(url, token=None):
    status, body = fetch(url.split("?")[0] + "api/snapshot",
                         {"X-Lightray-Token": token} if token else None)
    assert status == 200, body
    return json.loads(body)


def status_json(*args):
    done = subprocess.run([sys.executable, "-m", "lightray.cli", "status", "--json", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@lightray.remote
def square(x):
    return x * x


@lightray.remote
def fail_loudly():
    raise ValueError("dashboard test failure")


# ------------------------------------------------------------------ server

def test_task_history_keeps_the_latest_samples_oldest_first():
    ring = history.TaskHistory(maxlen=3)
    for second in range(5):
        ring.record(float(second), {"FINISHED": second})
    assert ring.as_json() == [[2.0, {"FINISHED": 2}], [3.0, {"FINISHED": 3}],
                              [4.0, {"FINISHED": 4}]]


@pytest.mark.timeout(60)
def test_a_snapshot_lists_new_failures_and_reuses_the_errors_when_none_came(runtime):
    def failures(snapshot):
        return snapshot["tasks"]["by_state"]["FAILED"]

    with pytest.raises(lightray.exceptions.TaskError):
        lightray.get(fail_loudly.remote(), timeout=30)
    assert wait_for(lambda: failures(source.snapshot()) == 1, timeout=30)
    first = source.snapshot()
    (error,) = first["errors"]
    assert error["name"].endswith("fail_loudly") and "dashboard test failure" in error["error"]
    assert source.snapshot(first)["errors"] is first["errors"]
    with pytest.raises(lightray.exceptions.TaskError):
        lightray.get(fail_loudly.remote(), timeout=30)
    assert wait_for(lambda: failures(source.snapshot(first)) == 2, timeout=30)
    assert len(source.snapshot(first)["errors"]) == 2


@pytest.mark.timeout(60)
def test_init_include_dashboard_serves_the_page_and_stops_at_shutdown():
    context = lightray.init(num_cpus=1, include_dashboard=True, dashboard_port=0)
    try:
        url = lightray.get_runtime_context().dashboard_url
        assert url == context.dashboard_url and url.startswith("http://127.0.0.1:")
        status, page = fetch(url)
        assert status == 200 and b"<title>lightray dashboard</title>" in page
        assert fetch(url + "static/app.js")[0] == 200
        payload = snapshot_of(url)
        (node,) = payload["snapshot"]["nodes"]
        assert node["node_id"] == lightray.nodes()[0]["node_id"]
        assert node["cpu_total"] == 1.0
    finally:
        lightray.shutdown()
    assert lightray.get_runtime_context().dashboard_url is None
    with pytest.raises(OSError):
        fetch(url)


def test_the_dashboard_is_refused_in_local_mode_which_records_no_task_events():
    with pytest.raises(ValueError, match="local mode"):
        lightray.init(local_mode=True, include_dashboard=True)
    assert not lightray.is_initialized()


def test_dashboard_port_without_include_dashboard_is_refused():
    with pytest.raises(ValueError, match="include_dashboard"):
        lightray.init(dashboard_port=8000)
    with pytest.raises(TypeError, match="include_dashboard"):
        lightray.init(include_dashboard="yes")


@pytest.mark.timeout(60)
def test_a_port_asked_for_that_is_taken_fails_init_and_leaves_nothing_running():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            lightray.init(num_cpus=1, include_dashboard=True, dashboard_port=port)
    assert not lightray.is_initialized()


def test_binding_a_non_loopback_host_without_the_cluster_key_is_refused():
    with pytest.raises(ValueError, match="not a loopback address.*cluster key"):
        server.start("0.0.0.0", 0)


def test_the_cli_refuses_a_non_loopback_host_without_a_key(runtime):
    from lightray.discovery import running_agent_records

    (record,) = running_agent_records()
    done = subprocess.run([sys.executable, "-m", "lightray.cli", "dashboard", "--address",
                           record["ipc"], "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items()
                               if k != "LIGHTRAY_CLUSTER_KEY"})
    assert done.returncode == 1
    assert "not a loopback address" in done.stderr and "--cluster-key" in done.stderr


@pytest.mark.timeout(60)
def test_on_a_non_loopback_host_the_api_needs_the_token_derived_from_the_key(runtime):
    key = new_cluster_key()
    dashboard = server.start("0.0.0.0", 0, key)
    try:
        token = server.token_for(key)
        assert dashboard.url.endswith(f"?token={token}")
        assert key.shared.hex() not in dashboard.url     # the URL never holds the key
        base = f"http://127.0.0.1:{dashboard.port}/"
        assert fetch(base + "api/snapshot")[0] == 403
        assert fetch(base + "api/snapshot", {"X-Lightray-Token": "0" * 40})[0] == 403
        assert fetch(base + f"api/snapshot?token={token}")[0] == 200
        assert snapshot_of(base, token)["snapshot"]["nodes"]
    finally:
        dashboard.stop()


@pytest.mark.timeout(60)
def test_on_loopback_a_request_naming_another_host_is_refused(runtime):
    dashboard = server.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{dashboard.port}/"
        assert fetch(base + "api/snapshot", {"Host": "attacker.example:80"})[0] == 421
        assert fetch(base + "api/snapshot", {"Host": f"localhost:{dashboard.port}"})[0] == 200
        assert fetch(base + "nothing-here")[0] == 404
    finally:
        dashboard.stop()


@pytest.mark.timeout(90)
def test_the_snapshot_of_a_cluster_matches_lightray_status(cluster):
    process = start_cli_dashboard(cluster.head.address)
    try:
        url = process.url
        statuses = {n["node_id"]: n for n in status_json("--address", cluster.head.address)}
        nodes = {n["node_id"]: n for n in snapshot_of(url)["snapshot"]["nodes"]}
        assert set(nodes) == set(statuses) and len(nodes) == 3
        for node_id, row in nodes.items():
            assert row["state"] == ("ALIVE" if statuses[node_id]["alive"] else "DEAD")
            assert row["cpu_total"] == statuses[node_id]["resources"]["CPU"]
            assert row["store_capacity"] == statuses[node_id]["store_capacity"]
            assert row["is_head"] == statuses[node_id]["is_head"]
    finally:
        process.stop()


@pytest.mark.timeout(90)
def test_the_cli_binds_a_non_loopback_host_only_with_the_clusters_key(own_cluster, tmp_path):
    from lightray.discovery import agent_at
    from lightray.transport.keys import make_cluster_key

    head = own_cluster.add_node(head=True)
    key_file = agent_at(head.address)["cluster_key_file"]
    other_key = str(tmp_path / "other.key")
    make_cluster_key(other_key)
    done = subprocess.run([sys.executable, "-m", "lightray.cli", "dashboard", "--address",
                           head.address, "--host", "0.0.0.0", "--port", "0",
                           "--cluster-key", other_key],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not the key of the agent" in done.stderr, done.stderr
    dashboard = CliDashboard(head.address, "--host", "0.0.0.0", "--cluster-key", key_file)
    try:
        assert "?token=" in dashboard.url
        port = dashboard.url.split(":")[2].split("/")[0]
        assert fetch(f"http://127.0.0.1:{port}/api/snapshot")[0] == 403
        token = dashboard.url.split("?token=")[1]
        assert snapshot_of(f"http://127.0.0.1:{port}/", token)["snapshot"]["nodes"]
    finally:
        assert dashboard.stop() == 0


class CliDashboard:
    """`lightray dashboard` in a process of its own; url once it printed it."""

    def __init__(self, address, *options):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightray.cli", "dashboard", "--address", address,
             "--port", "0", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if " at http://" not in line:
            self.stop()
            raise AssertionError(f"lightray dashboard printed {line!r}: "
                                 f"{self.process.stderr.read()}")
        self.url = line.rsplit(" at ", 1)[1].strip()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()
        return code


def start_cli_dashboard(address) -> CliDashboard:
    return CliDashboard(address)


# ----------------------------------------------------------------- browser

@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"no Chromium here ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver, element_id):
    """(text, data-value) of an element of the page. Read by script, in one
    go: the page redraws its tables every poll, so a handle to an element
    would go stale."""
    return tuple(driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "return [e.textContent, e.dataset.value === undefined ? null : e.dataset.value];",
        element_id))


def page(driver, script):
    return driver.execute_script(script)


@pytest.mark.timeout(120)
def test_the_page_shows_the_cluster_as_lightray_status_does_and_updates_live(cluster, browser):
    dashboard = start_cli_dashboard(cluster.head.address)
    try:
        browser.get(dashboard.url)
        assert wait_for(lambda: shown(browser, "nodes-alive")[0] == "3", timeout=30)
        assert shown(browser, "nodes-total")[0] == "3"
        statuses = status_json("--address", cluster.head.address)
        rows = page(browser, "return Array.from(document.querySelectorAll("
                             "'#nodes tbody tr'), (r) => r.dataset.nodeId);")
        assert sorted(rows) == sorted(n["node_id"] for n in statuses)
        # Nothing stored yet: the page's store figures are lightray status's.
        capacity = sum(n["store_capacity"] for n in statuses if n["alive"])
        assert shown(browser, "store-capacity") == (f"{capacity / MIB:.1f}", str(capacity))
        browser.execute_script("window.lightrayMarker = 'not reloaded';")
        polls_script = "return Number(document.body.dataset.polls || 0);"
        polls = page(browser, polls_script)
        finished_before = int(shown(browser, "tasks-finished")[1])

        # A workload runs: the page's figures grow without a reload.
        held = [lightray.put(bytes(2 * MIB)) for _ in range(3)]
        results = [square.remote(i) for i in range(30)]
        failed = fail_loudly.remote()
        assert lightray.get(results, timeout=60) == [i * i for i in range(30)]
        with pytest.raises(lightray.exceptions.TaskError):
            lightray.get(failed, timeout=60)

        def store_matches():
            used = sum(n["store_used"] for n in status_json(
                "--address", cluster.head.address) if n["alive"])
            return shown(browser, "store-used") == (f"{used / MIB:.1f}", str(used)) and used > 0
        assert wait_for(store_matches, timeout=30, interval=0.5)
        assert int(shown(browser, "num-objects")[1]) >= len(held)
        # The task counts are the state API's (which hears of a task's end a
        # moment after get returns), and grew while the page stayed.
        def summary():
            counts = {}
            for by_state in lightray.state.summarize_tasks().values():
                for state, count in by_state.items():
                    counts[state] = counts.get(state, 0) + count
            return counts
        assert wait_for(lambda: summary().get("FINISHED", 0) == 30
                        and summary().get("FAILED", 0) == 1, timeout=30), summary()
        assert wait_for(lambda: shown(browser, "tasks-finished")[1] == "30"
                        and shown(browser, "tasks-failed")[1] == "1", timeout=30)
        assert shown(browser, "tasks-total")[1] == str(sum(summary().values()))
        assert int(shown(browser, "tasks-finished")[1]) > finished_before
        assert "dashboard test failure" in shown(browser, "errors")[0]
        # A traceback opened stays open while the page redraws.
        page(browser, "document.querySelector('#errors details summary').click();")
        polls_now = page(browser, polls_script)
        assert wait_for(lambda: page(browser, polls_script) > polls_now + 1, timeout=30)
        assert page(browser, "return document.querySelector('#errors details').open;")
        assert page(browser, polls_script) > polls
        assert browser.execute_script("return window.lightrayMarker;") == "not reloaded"
        assert page(browser, "return document.querySelectorAll('#task-chart polyline').length;")
        link = page(browser, "return document.getElementById('timeline-link').href;")
        status, trace = fetch(link)
        assert status == 200
        slices = [e for e in json.loads(trace)["traceEvents"] if e.get("ph") == "X"]
        assert len(slices) >= 31      # the squares and the failed task, at least
    finally:
        dashboard.stop()

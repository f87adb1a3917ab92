#!/usr/bin/env python
"""A screenshot of the dashboard under load, for the README: docs/dashboard.png.

Usage::

    python benchmarks/dashboard_screenshot.py [--out docs/dashboard.png] [--seconds 8]

Starts two agents on 127.0.0.1 (a head and one that joins it, 2 CPUs and a
96 MiB store each, in private temporary folders), attaches, serves the
dashboard from this process, and runs a workload while headless Chromium
(/usr/bin/chromium through /usr/bin/chromedriver, nothing downloaded) looks at
the page: short tasks without pause, two actors, objects held past the store's
capacity (so some spill), and a task that fails. After --seconds the full page
is saved; then everything is stopped.
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def start_agent(extra: list, env: dict) -> tuple:
    command = [sys.executable, "-m", "lightray.agent", "--num-cpus", "2",
               "--object-store-memory", str(96 << 20), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, text=True)
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("lightray agent"):
        process.kill()
        raise RuntimeError(f"the agent did not start: {line!r}")
    return process, line.split()[-1]


def workload(lightray, stop: threading.Event) -> None:
    @lightray.remote(scheduling_strategy="SPREAD")
    def step(i):
        time.sleep(0.4 + (i % 5) * 0.2)
        return i

    @lightray.remote
    def broken(path):
        raise FileNotFoundError(f"no input at {path}")

    @lightray.remote
    class Accumulator:
        def __init__(self):
            self.total = 0

        def add(self, x):
            self.total += x
            return self.total

    adders = [Accumulator.options(name=f"accumulator-{i}").remote() for i in range(2)]
    held = []
    broken.remote("/data/part-0007.parquet")
    round_number = 0
    while not stop.is_set():
        refs = [step.remote(i) for i in range(8)]
        calls = [adders[i % 2].add.remote(i) for i in range(8)]
        for _ in range(6):
            if len(held) < 48:
                held.append(lightray.put(bytes(4 << 20)))
        lightray.get(refs + calls, timeout=60)
        round_number += 1
    del held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    private = tempfile.mkdtemp(prefix="lightray-screenshot-")
    os.environ["LIGHTRAY_TEMP_DIR"] = os.path.join(private, "tmp")
    os.environ["LIGHTRAY_HOME"] = os.path.join(private, "home")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    import lightray
    from lightray import dashboard
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    agents = []
    driver = None
    stop = threading.Event()
    try:
        head, address = start_agent(["--head", "--port", "0"], env)
        agents.append(head)
        agents.append(start_agent(["--address", address], env)[0])
        lightray.init(address=address)
        server = dashboard.start("127.0.0.1", 0, interval=0.5)
        load = threading.Thread(target=workload, args=(lightray, stop), daemon=True)
        load.start()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1250",
                         "--hide-scrollbars"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.get(server.url)
        time.sleep(args.seconds)
        for summary in driver.find_elements("css selector", "#errors details summary")[:1]:
            summary.click()          # show one traceback
        height = driver.execute_script("return document.body.scrollHeight;")
        driver.set_window_size(1440, max(900, int(height) + 160))
        time.sleep(1.0)
        driver.save_screenshot(args.out)
        print(f"saved {args.out}")
        stop.set()
        load.join(60)
        server.stop()
    finally:
        stop.set()
        if driver is not None:
            driver.quit()
        lightray.shutdown()
        for process in agents:
            process.terminate()
        for process in agents:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(private, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The dashboard's HTTP server: a page, its script, and JSON read from a cached snapshot.

    sampler thread ──every interval──▶ source.snapshot() (the state API)
                   ──▶ self.latest (+ TaskHistory)
    browser ──GET /──────────────────▶ static/index.html (+ /static/app.js, style.css)
            ──GET /api/snapshot──────▶ {"snapshot", "history", "error", ...} as JSON
            ──GET /api/timeline──────▶ lightray.timeline(): a Chrome trace, as a download

Only the sampler talks to the cluster, once per interval (or twice as long as
its last read took, if longer), however many pages poll: a request costs a
JSON dump of what it read last. The server is the
standard library's ThreadingHTTPServer in a daemon thread (see the README for
why that is enough). Bound to a loopback address it answers only requests
naming a loopback host (no DNS rebinding); bound to any other address it needs
the cluster key, and every /api request must then carry the token derived from
it (``?token=`` or the X-Lightray-Token header), which the URL it prints holds.
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import ipaddress
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.parse

from .. import api, config
from ..observe.timeline import timeline as cluster_timeline
from ..transport.keys import ClusterKey
from . import source
from .history import TaskHistory

logger = logging.getLogger("lightray.dashboard")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/static/style.css": ("style.css", "text/css; charset=utf-8")}
_TOKEN_LABEL = b"lightray dashboard token v1"
STOP_TIMEOUT = 15.0          # seconds stop() waits for the sampler's last read


def token_for(key: ClusterKey) -> str:
    """The dashboard's token: derived from the cluster key's secret, so that a
    URL seen by someone gives them the page, never the key."""
    return hmac.new(key.shared, _TOKEN_LABEL, hashlib.sha256).hexdigest()[:40]


def is_loopback(host: str) -> bool:
    """Whether every address host names is a loopback one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve the dashboard host {host!r}: {error}") from None
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _names_loopback(host_header: str) -> bool:
    """Whether a Host header names a loopback address literally ("localhost",
    127.x.x.x, [::1]), with no lookup: a name of the attacker's that resolves
    to 127.0.0.1 (DNS rebinding) is refused."""
    if host_header.startswith("["):
        host = host_header[1:host_header.find("]")]
    else:
        host = host_header.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardServer:
    """A running dashboard; url says where, stop() ends it."""

    def __init__(self, host: str, port: int, token: str | None, interval: float):
        self.host = host
        self.token = token
        self.interval = interval
        self.history = TaskHistory()
        self.latest = None           # the last snapshot read, None before the first
        self.error = None            # why the last read failed, else None
        self._stopped = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.dashboard = self
        self.port = self._httpd.server_address[1]
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True,
                                         name="lightray-dashboard-sampler")
        self._serving = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.2}, daemon=True, name="lightray-dashboard-http")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"http://{host}:{self.port}/"
        return url + f"?token={self.token}" if self.token else url

    def start(self) -> "DashboardServer":
        self._sample()               # the first page load has data
        self._sampler.start()
        self._serving.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._serving.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._sampler.is_alive():
            self._sampler.join(STOP_TIMEOUT)

    def serve_until_stopped(self) -> None:
        """Block until stop() is called (from a signal handler, say)."""
        while not self._stopped.wait(0.5):
            pass

    def _sample_loop(self) -> None:
        pause = self.interval
        while not self._stopped.wait(pause):
            started = time.monotonic()
            self._sample()
            # A slow read (a large ring of task events to fold) spaces the next
            # one out: the dashboard keeps the agents at most a third busy.
            pause = max(self.interval, 2 * (time.monotonic() - started))

    def _sample(self) -> None:
        if not api.is_initialized():     # never start a runtime by reading one
            self.error = "the lightray runtime is not running"
            return
        try:
            snapshot = source.snapshot(self.latest)
        except Exception as error:   # the cluster went away or timed out: say so, keep serving
            self.error = f"{type(error).__name__}: {error}"
            logger.debug("dashboard read failed", exc_info=True)
            return
        self.latest, self.error = snapshot, None
        self.history.record(snapshot["taken_at"], snapshot["tasks"]["by_state"])

    def payload(self) -> dict:
        return {"snapshot": self.latest, "history": self.history.as_json(),
                "error": self.error, "interval": self.interval, "now": time.time()}


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        host = address[0]
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
            address = (host.strip("[]"), address[1])
        super().__init__(address, handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lightray-dashboard"

    def log_message(self, format, *args):   # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        dashboard = self.server.dashboard
        url = urllib.parse.urlsplit(self.path)
        if not self._host_allowed(dashboard):
            return self._send(421, b"this dashboard answers only its own address\n",
                              "text/plain")
        if url.path in STATIC_FILES:
            name, content_type = STATIC_FILES[url.path]
            with open(os.path.join(STATIC_DIR, name), "rb") as file:
                return self._send(200, file.read(), content_type)
        if url.path.startswith("/api/"):
            if not self._token_ok(dashboard, url):
                return self._send(403, b'{"error": "this dashboard needs its token: open the '
                                       b'URL it printed (with ?token=...)"}',
                                  "application/json")
            if url.path == "/api/snapshot":
                body = json.dumps(dashboard.payload(), default=str).encode()
                return self._send(200, body, "application/json")
            if url.path == "/api/timeline":
                return self._timeline()
        return self._send(404, b"not found\n", "text/plain")

    def _host_allowed(self, dashboard) -> bool:
        if dashboard.token is not None:
            return True          # the token guards it; any name may reach it
        return _names_loopback(self.headers.get("Host") or "")

    def _token_ok(self, dashboard, url) -> bool:
        if dashboard.token is None:
            return True
        given = (self.headers.get("X-Lightray-Token")
                 or urllib.parse.parse_qs(url.query).get("token", [""])[0])
        return hmac.compare_digest(given.encode(), dashboard.token.encode())

    def _timeline(self):
        with tempfile.TemporaryDirectory(prefix="lightray-dashboard-") as folder:
            path = os.path.join(folder, "timeline.json")
            cluster_timeline(path)
            with open(path, "rb") as file:
                body = file.read()
        self._send(200, body, "application/json",
                   {"Content-Disposition": 'attachment; filename="lightray-timeline.json"'})

    def _send(self, status: int, body: bytes, content_type: str, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def start(host: str = "127.0.0.1", port: int | None = None, cluster_key: ClusterKey | None = None,
          interval: float | None = None) -> DashboardServer:
    """Serve the dashboard of the runtime this process is attached to.

    port None: LIGHTRAY_DASHBOARD_PORT (default 8265), or any free port if
    that one is taken; a port given must be free (0: any). A host that is not
    a loopback address needs the cluster's key (ValueError otherwise); the
    page's requests then need its token (DashboardServer.url holds it).
    """
    if not isinstance(host, str) or not host:
        raise TypeError(f"the dashboard host must be a non-empty str, got {host!r}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port <= 65535):
        raise ValueError(f"the dashboard port must be an int in 0-65535, got {port!r}")
    interval = config.dashboard_interval() if interval is None else interval
    if not is_loopback(host):
        if cluster_key is None:
            raise ValueError(f"the dashboard binds {host!r}, which is not a loopback address, "
                             "only with the cluster key (--cluster-key FILE or "
                             "LIGHTRAY_CLUSTER_KEY); its page then asks for a token derived "
                             "from it. Without a key it serves on 127.0.0.1 only")
    token = token_for(cluster_key) if cluster_key is not None and not is_loopback(host) else None
    if port is None:
        try:
            server = DashboardServer(host, config.dashboard_port(), token, interval)
        except OSError as error:
            logger.info("dashboard port %s is taken (%s); using a free one",
                        config.dashboard_port(), error)
            server = DashboardServer(host, 0, token, interval)
    else:
        try:
            server = DashboardServer(host, port, token, interval)
        except OSError as error:
            raise OSError(f"the dashboard cannot listen on {host}:{port}: "
                          f"{error.strerror or error}") from None
    return server.start()

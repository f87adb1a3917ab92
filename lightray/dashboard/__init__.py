"""The live dashboard: a web page of the cluster, read from the state API.

    lightray dashboard [--port N] [--host H]       # a process of its own, attached to a cluster
    lightray.init(include_dashboard=True)          # in the driver, on 127.0.0.1
    lightray.get_runtime_context().dashboard_url   # where it serves

Modules:

    source    snapshot(): nodes, task counts, actors, largest objects, errors (lightray.state)
    history   TaskHistory: task counts by state over time, a bounded ring
    server    the HTTP server (stdlib, in threads), its sampler, the token; static/ the page
    cli       `lightray dashboard`: attach, serve, print the URL, stop on Ctrl-C / SIGTERM

May import: the public API (lightray.api, lightray.state, the timeline of
lightray.observe), config, the key
format (transport.keys) and discovery. lightray.api imports server only when
init(include_dashboard=True) asks for it; lightray.cli imports cli.
"""
from .server import DashboardServer, start

__all__ = ["DashboardServer", "start"]

"""`lightray dashboard`: serve the dashboard of a running cluster until stopped.

    lightray dashboard [--address HOST:PORT | ipc://...] [--cluster-key FILE]
                       [--port N] [--host H]

It attaches to the cluster as init(address=...) does (without --address: the
one init(address="auto") finds), prints the URL on stdout, and serves until
Ctrl-C or SIGTERM. --host other than a loopback address needs the cluster's
key (--cluster-key or LIGHTRAY_CLUSTER_KEY), checked against the cluster.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import api
from ..discovery import NoClusterError, agent_at, auto_agent, check_cluster_key
from ..transport.keys import KEY_ENV, read_cluster_key
from . import server


def add_parser(sub, parents) -> argparse.ArgumentParser:
    """The `dashboard` subcommand, in lightray.cli's parser."""
    parser = sub.add_parser("dashboard", parents=parents,
                            help="serve a live web page of the cluster (nodes, tasks, "
                                 "actors, objects, errors)")
    parser.add_argument("--port", type=int, default=None,
                        help="port to listen on (default: $LIGHTRAY_DASHBOARD_PORT, else 8265, "
                             "else any free one; 0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other needs the "
                             "cluster key, and the page its token)")
    return parser


def run(args) -> int:
    """Attach, serve, and return once stopped; ValueError / OSError for the
    command line to print."""
    key_path = args.cluster_key or os.environ.get(KEY_ENV) or None
    try:
        record = agent_at(args.address) if args.address else auto_agent()
    except NoClusterError as error:
        raise ValueError(f"{error} (name a runtime with --address)") from None
    check_cluster_key(record, key_path)
    cluster_key = None
    if not server.is_loopback(args.host):
        if key_path is None:
            raise ValueError(f"--host {args.host} is not a loopback address: the dashboard "
                             "binds it only with the cluster key (--cluster-key FILE or "
                             f"{KEY_ENV}); without one, serve on 127.0.0.1")
        cluster_key = read_cluster_key(key_path)
        if record.get("cluster_public") != cluster_key.public.decode():
            raise ValueError(f"{key_path} is not the key of the cluster at "
                             f"{record.get('address') or record['ipc']}")
    api.init(address=record["ipc"])
    try:
        dashboard = server.start(args.host, args.port, cluster_key)
    except BaseException:
        api.shutdown()
        raise
    previous = signal.signal(signal.SIGTERM, lambda *_: dashboard.stop())
    print(f"lightray dashboard of {record.get('address') or record['ipc']} at {dashboard.url}",
          flush=True)
    try:
        dashboard.serve_until_stopped()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
        signal.signal(signal.SIGTERM, previous)
        api.shutdown()
    sys.stdout.flush()
    return 0

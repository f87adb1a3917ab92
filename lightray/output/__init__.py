"""lightray.output: what tasks and actor methods print, seen where the user looks.

    worker: sys.stdout/sys.stderr ──capture──▶ its log file (session dir, bounded)
                                  └──WORKER_OUTPUT──▶ agent ──OUTPUT──▶ the driver (same node)
                                                       └──OUTPUT_RELAY (mesh)──▶ driver's agent
    driver: OUTPUT ──printer──▶ its own sys.stdout / sys.stderr, "(name pid=.. node=..) line"

Modules:

* lines: the shape of a batch of printed lines (checked wherever one arrives),
  the line prefix, bounds on lines and batches.
* logfile: a worker's log file, rotated at LIGHTRAY_WORKER_LOG_BYTES.
* capture: the worker side: sys.stdout/sys.stderr replaced by streams that
  attribute each line to the call that printed it (runtime_context.current_call).
* relay: the agent side: where a batch goes (a local driver, or a peer agent).
* printer: the driver side: prints batches to sys.stdout / sys.stderr.
* logs: the log files of a node's workers, as an agent answers ``lightray
  logs`` (its "logs" INFO request, and LOGS_REQUEST from a peer).
* command: the ``lightray logs`` command (lightray.cli registers it).

May import the floor (config, runtime_context, transport). Imported by
lightray.worker (capture), lightray.agent (relay, lines, logs), lightray.api
(printer) and lightray.cli (command, which imports lightray.client).
"""

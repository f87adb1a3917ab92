"""lightray.observe: seeing what the cluster does (issue 16's state API and timeline).

Modules:

* events: the bounded ring of task and actor state changes each agent keeps
  (LIGHTRAY_TASK_EVENTS), a worker's recorder of its runs, folding events into
  rows. No I/O; the agent's state and the workers use it.
* queries: an agent's answers to lightray.state, its peers' gathered over the
  mesh (STATE_QUERY / STATE_REPLY, plain data) with a timeout. No I/O.
* gather: asking an agent (this driver's, or one at an address) for the
  cluster's rows; filters and limits; the rows of lightray.state.
* timeline: the runs as a Chrome / Perfetto trace (lightray.timeline).
* cli: ``lightray list``, ``lightray summary`` and ``lightray timeline``.

This file imports nothing: the workers and the agent import events alone.
"""

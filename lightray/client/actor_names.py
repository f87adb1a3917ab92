"""Actor names unique across a cluster, decided by the control leader.

    Counter.options(name="svc").remote() in a cluster
      ── kv compare_and_set(ACTOR_NAMES, "ns\\0svc", None -> actor id) ──▶ the leader
          won   the name is this actor's: ACTOR_CREATE as on one node
          lost  the holder: found alive (get_actor's lookup over the peers) -> "exists"
                (get_if_exists) or "taken"; never found within HOLDER_GRACE s -> the
                claim is stale (its creator died before creating it, or the holder's
                node died): taken over with compare_and_set(holder -> actor id)

Two drivers racing on two nodes both ask the leader, which orders the two
compare-and-sets: exactly one wins, the other finds the winner's actor. The
agent that hosts a named actor frees the name when the actor dies
(lightray.store.control.kv_requests.name_release).
"""
from __future__ import annotations

import time

from ..store.control.kv_requests import ACTOR_NAMES, actor_name_key

HOLDER_GRACE = 5.0      # seconds a claim may stand with no live actor behind it
CLAIM_TIMEOUT = 30.0    # seconds for each acknowledged write or read


def claim(client, actor_id: bytes, namespace: str, name: str):
    """None once this actor holds the name; else (holder actor id, description)
    of the live actor holding it."""
    backend = client.kv_backend()
    key = actor_name_key(namespace, name).decode()
    absent_since = None
    while True:
        if backend.compare_and_set(ACTOR_NAMES, key, None, actor_id, CLAIM_TIMEOUT):
            return None
        holder = backend.get(ACTOR_NAMES, key, True, CLAIM_TIMEOUT)
        if holder is None:
            continue                  # freed meanwhile: claim again
        found = client.info(("actor", namespace, name), timeout=CLAIM_TIMEOUT)
        if found is not None:
            return found
        # Its creation may be on its way (claimed a moment ago): look again a while.
        now = time.monotonic()
        if absent_since is None:
            absent_since = now
        if now - absent_since < HOLDER_GRACE:
            time.sleep(0.05)
            continue
        if backend.compare_and_set(ACTOR_NAMES, key, holder, actor_id, CLAIM_TIMEOUT):
            return None
        absent_since = None

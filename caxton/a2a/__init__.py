"""Agent2Agent (A2A 1.0, issue #19): Caxton's agents served over A2A, and remote A2A agents
as providers of capabilities in the router.

* :mod:`caxton.a2a.wire`: JSON-RPC and A2A message shapes, errors and the version rule (pure).
* :mod:`caxton.a2a.cards`: agent cards from the running agents and the security config (pure).
* :mod:`caxton.a2a.tasks`: A2A tasks kept with their conversation (sans-IO book-keeping).
* :mod:`caxton.a2a.schema` and :mod:`caxton.a2a.records`: the tasks as rows of the store
  (``a2a_tasks``), read by every instance of a cluster and kept across restarts.
* :mod:`caxton.a2a.following`: following a task another instance runs (its row, woken by
  that instance's notices).
* :mod:`caxton.a2a.service`: the component that runs tasks through the router.
* :mod:`caxton.a2a.remote`: remote A2A agents, reached with the ``a2a-sdk`` client
  (through :mod:`caxton.a2a.transport`: one origin, bounded answers).
* :mod:`caxton.a2a.directory`: local and remote agents as the one directory the router reads.

The HTTP routes (cards, ``/a2a/{name}``) are :mod:`caxton.http.a2a`; the checks of the
``a2a`` config section are :mod:`caxton.config.a2a_checks`.
"""

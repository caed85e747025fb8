"""Hedgerow's device agent: runs on each device and makes its Docker engine match git.

It imports nothing from `reconciler` but the wire contract (`reconciler.wire`), so a device
installs only what it needs.

- `agent.steps` — pure: the engine's state as plain data, `plan_steps(desired, engine)`, the
  `apply` model of a successful run, rollback and the status report's releases;
- `agent.engine` — the only module that imports `docker`: reads what Hedgerow owns (by labels)
  and runs one step at a time;
- `agent.converge` — one pass: plan, run, contain failures per application, switch back;
- `agent.state` — the last desired document on disk (without credentials), written atomically.
"""

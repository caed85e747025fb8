"""The controller (adapter around the core): follow git, apply each commit whole, and
reconcile devices through a work queue. `controller` holds the reconcile contract,
`runner` its loops, `queue` the rate-limited queue, `source` the git mirror."""

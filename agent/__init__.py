"""Hedgerow's device agent.

It will import nothing from `reconciler` but the wire contract, so a device installs only what it
needs. The agent itself is built under the devices issue.
"""

"""Secrets: the SOPS codec (bytes in, bytes out), `Secret` values that never print,
registry credentials, and bearer tokens stored only as hashes."""

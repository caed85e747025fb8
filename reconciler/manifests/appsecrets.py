"""Application secrets (the `Secret` kind): decrypt them from a catalog and write new ones.

The same tooling as image credentials (`reconciler.manifests.credentials`): sops with age, MAC
checked, `.sops.yaml` creation rules. Decrypted values live only in `Secret` objects; findings
name the file and the key, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.credentials import (
    NO_KEY,
    CreationError,
    CreationRule,
    decrypted_spec,
    encrypt_manifest,
)
from reconciler.manifests.model import Secret as SecretManifest
from reconciler.manifests.problems import Problem, Severity
from reconciler.secrets.secret import Secret, fingerprint
from reconciler.secrets.sops import Identity, Rules

DEFAULT_RULES = Rules(encrypted_regex="^(data)$")
Values = Mapping[str, Secret]  # a Secret's data, decrypted: key → value


def decrypt_secrets(
    catalog: Catalog, identities: Sequence[Identity]
) -> tuple[dict[str, Values], list[Problem]]:
    """Every Secret decrypted (no key: a warning each, as for credentials); a failure is a
    finding at the Secret's file."""
    found: dict[str, Values] = {}
    problems: list[Problem] = []
    for name, entry in sorted(catalog.secrets.items()):
        if not identities:
            problems.append(entry.problem(("spec",), NO_KEY, Severity.WARNING))
            continue
        result = decrypt_secret(entry, identities)
        if isinstance(result, str):
            problems.append(entry.problem(("sops",), result))
        else:
            found[name] = result
    return found, problems


def decrypt_secret(entry: Checked[SecretManifest], identities: Sequence[Identity]) -> Values | str:
    """One Secret's values, or why not (a message without any value)."""
    spec = decrypted_spec(entry.document, "Secret", identities)
    if isinstance(spec, str):
        return spec
    data = spec.get("data") if spec is not None else None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "decrypted data values must be strings"
    return {str(key): Secret(value) for key, value in data.items()}


def fingerprints(secrets: Mapping[str, Values], key: bytes) -> dict[str, str]:
    """Keyed fingerprints of each Secret's keys and values: what must never change under its
    name (a release naming it must always mean the same values)."""
    found = {}
    for name, values in secrets.items():
        keys = sorted(values)
        found[name] = fingerprint(key, *keys, *(values[k] for k in keys))
    return found


def secret_rule(rule: CreationRule) -> CreationRule:
    """The creation rule for a Secret: `--age` recipients encrypt `data` (the default rule);
    a `.sops.yaml` rule must encrypt the data's values and leave the rest readable."""
    if rule.source == "--age":
        return CreationRule(rule.recipients, DEFAULT_RULES, rule.source)
    if not rule.rules.encrypts(("spec", "data", "key")):
        raise CreationError(
            f"{rule.source} would leave a Secret's data in plain text: add "
            "`encrypted_regex: ^(data|username|password)$` to the rule"
        )
    if rule.rules.encrypts(("metadata", "name")) or rule.rules.encrypts(("kind",)):
        raise CreationError(f"{rule.source} would encrypt what must stay readable in review")
    return rule


def render_secret(
    name: str, data: Mapping[str, Secret], rule: CreationRule, *, now: datetime, file: str
) -> str:
    """The encrypted manifest text. The plaintext exists only inside this call."""
    spec = {"data": {key: value.reveal() for key, value in data.items()}}
    return encrypt_manifest("Secret", name, spec, list(data.values()), rule, now=now, file=file)

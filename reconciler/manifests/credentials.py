"""Image credentials: decrypt them from a catalog, fingerprint them, and write new ones.

Everything decrypted is held in `Secret`s. Findings name the file and what failed, never a
value. `.sops.yaml` creation rules are read the way sops reads them, so an operator's existing
setup keeps working on the same files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler import API_VERSION
from reconciler.errors import HedgerowError
from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.load import Document
from reconciler.manifests.model import KINDS, ImageCredential
from reconciler.manifests.problems import Problem, Severity
from reconciler.secrets.secret import Secret, fingerprint
from reconciler.secrets.sops import (
    Identity,
    Rules,
    SopsError,
    decrypt,
    encrypt,
    is_encrypted_value,
)

SOPS_CONFIG = ".sops.yaml"
DEFAULT_RULES = Rules(encrypted_regex="^(username|password)$")
_READABLE = (("apiVersion",), ("kind",), ("metadata", "name"), ("spec", "registry"))


@dataclass(frozen=True, slots=True)
class Credential:
    """A decrypted credential. Its repr shows `Secret('********')` for both secrets."""

    name: str
    registry: str | None
    username: Secret
    password: Secret

    def fingerprint(self, key: bytes) -> str:
        """Keyed fingerprint of what must never change under this name."""
        return fingerprint(key, self.username, self.password)


def decrypt_credentials(
    catalog: Catalog, identities: Sequence[Identity]
) -> tuple[dict[str, Credential], list[Problem]]:
    """Decrypt every credential; a failure is a finding at the credential's file."""
    return gather_credentials(catalog, lambda entry: decrypt_credential(entry, identities))


def gather_credentials(
    catalog: Catalog, decrypt: Callable[[Checked[ImageCredential]], Credential | Problem]
) -> tuple[dict[str, Credential], list[Problem]]:
    """Each credential of the catalog through `decrypt`, in name order: the decrypted ones,
    and the findings of the others."""
    found: dict[str, Credential] = {}
    problems: list[Problem] = []
    for name, entry in sorted(catalog.credentials.items()):
        result = decrypt(entry)
        if isinstance(result, Credential):
            found[name] = result
        else:
            problems.append(result)
    return found, problems


def decrypt_credential(
    entry: Checked[ImageCredential], identities: Sequence[Identity]
) -> Credential | Problem:
    """One credential decrypted, or why not as a finding at its file; it depends on nothing
    but the credential's document, so a result may be kept while the file is unchanged."""
    result = _decrypt_one(entry, identities)
    return result if isinstance(result, Credential) else entry.problem(("sops",), result)


NO_KEY = (
    "not decrypted: no age key found (set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass "
    "--age-key-file); only the structure was checked"
)


def structure_only(catalog: Catalog) -> list[Problem]:
    """One warning per credential when no age key was found: say what was not checked."""
    return [
        entry.problem(("spec",), NO_KEY, Severity.WARNING)
        for _, entry in sorted(catalog.credentials.items())
    ]


def decrypted_spec(
    document: Document, kind: str, identities: Sequence[Identity]
) -> dict[str, Any] | str | None:
    """The decrypted `spec` of a document holding secrets (None: it has none), or why it
    cannot be had, as a message without any value."""
    if _documents_in(document.text) != 1:
        return f"sops encrypts whole files: keep each {kind} in a file of its own"
    try:
        tree, _ = decrypt(document.text, identities, file=document.file)
    except SopsError as exc:
        return f"cannot decrypt: {exc.reason}"
    spec = tree.get("spec") if isinstance(tree, dict) else None
    return spec if isinstance(spec, dict) else None


def _decrypt_one(
    entry: Checked[ImageCredential], identities: Sequence[Identity]
) -> Credential | str:
    spec = decrypted_spec(entry.document, "ImageCredential", identities)
    if isinstance(spec, str):
        return spec
    username = spec.get("username") if isinstance(spec, dict) else None
    password = spec.get("password") if isinstance(spec, dict) else None
    if not isinstance(username, str) or not isinstance(password, str):
        return "decrypted username and password must be strings"
    if not username or not password:
        return "decrypted username and password must not be empty"
    return Credential(entry.name, entry.manifest.spec.registry, Secret(username), Secret(password))


# -- credentials encrypted whole ---------------------------------------------------------------


def sealed(document: Document) -> bool:
    """Whether sops encrypted the document whole, as it does with no `.sops.yaml` rule: its
    kind is an encrypted value, so nothing about it can be checked before decrypting."""
    data = document.data
    if not isinstance(data, dict) or "sops" not in data:
        return False
    kind = data.get("kind")
    return isinstance(kind, str) and is_encrypted_value(kind)


def unseal(document: Document, identities: Sequence[Identity]) -> Document | Problem:
    """A credential encrypted whole, as a `.sops.yaml` rule would have left it: what a
    credential keeps readable (apiVersion, kind, metadata, spec.registry) decrypted, the rest
    as encrypted as it was, so that no plaintext secret is in the document; they are
    decrypted into `Secret`s later, like any credential's. Flux decrypts such files, and an
    operator with the key expects them to work. Else one error at the document."""

    def refused(reason: str) -> Problem:
        line, column = document.locate(())
        message = f"encrypted whole by sops (kind, metadata and apiVersion too): {reason}"
        return Problem(document.file, line, column, None, None, None, message)

    if not identities:
        return refused(
            "no age key found to decrypt it (set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass "
            "--age-key-file); or let sops encrypt only the secrets, with "
            "`encrypted_regex: ^(username|password)$` in .sops.yaml"
        )
    if _documents_in(document.text) != 1:
        return refused("sops encrypts whole files: keep each ImageCredential in a file of its own")
    try:
        tree, _ = decrypt(document.text, identities, file=document.file)
    except SopsError as exc:
        return refused(f"cannot decrypt: {exc.reason}")
    kind = tree.get("kind") if isinstance(tree, dict) else None
    if kind != "ImageCredential":
        shown = kind if isinstance(kind, str) and kind in KINDS else "another"
        return refused(f"only an ImageCredential may be; this document's kind is {shown}")
    view = dict(document.data)
    view.update((key, tree[key]) for key in ("apiVersion", "kind", "metadata") if key in tree)
    spec, plain = view.get("spec"), tree.get("spec")
    if isinstance(spec, dict) and isinstance(plain, dict) and "registry" in plain:
        view["spec"] = {**spec, "registry": plain["registry"]}
    return Document(document.file, document.packed, document.index, view)


def _documents_in(text: str) -> int:
    try:
        return sum(node is not None for node in yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return 0


def fingerprints(credentials: Mapping[str, Credential], key: bytes) -> dict[str, str]:
    return {name: credential.fingerprint(key) for name, credential in credentials.items()}


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Names whose fingerprint differs between two revisions (of anything immutable)."""
    return sorted(name for name in before.keys() & after.keys() if before[name] != after[name])


# -- creating a credential ---------------------------------------------------------------------


class CreationError(HedgerowError):
    """A credential cannot be written; the message says why and never holds a secret."""


@dataclass(frozen=True, slots=True)
class CreationRule:
    recipients: tuple[str, ...]
    rules: Rules
    source: str  # where the rule came from, for messages


def creation_rule(output: Path, recipients: Sequence[str]) -> CreationRule:
    """Recipients and rules for a new file: `--age` if given, else the first matching
    `creation_rules` entry of the nearest `.sops.yaml` above the file (as sops walks up)."""
    if recipients:
        return CreationRule(tuple(recipients), DEFAULT_RULES, "--age")
    config = _find_config(output.resolve().parent) or _find_config(Path.cwd())
    if config is None:
        raise CreationError(
            f"no {SOPS_CONFIG} with creation_rules found above {output}; pass --age RECIPIENT"
        )
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CreationError(f"{config}: cannot read: {exc}") from None
    rules = loaded.get("creation_rules") if isinstance(loaded, dict) else None
    if not isinstance(rules, list):
        raise CreationError(f"{config}: no creation_rules list")
    relative = _relative(output.resolve(), config.parent)
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        pattern = rule.get("path_regex")
        if pattern and not (
            re.search(str(pattern), relative) or re.search(str(pattern), str(output.resolve()))
        ):
            continue
        return _rule_from(rule, f"{config} creation_rules[{index}]")
    raise CreationError(f"{config}: no creation rule matches {relative}")


def _find_config(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / SOPS_CONFIG).is_file():
            return candidate / SOPS_CONFIG
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _rule_from(rule: Mapping[str, Any], source: str) -> CreationRule:
    age = rule.get("age")
    if isinstance(age, str):
        recipients = tuple(r.strip() for r in age.split(",") if r.strip())
    elif isinstance(age, list):
        recipients = tuple(str(r).strip() for r in age)
    else:
        recipients = ()
    if not recipients:
        raise CreationError(f"{source}: no age recipients (only age keys are supported)")
    names = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex", "encrypted_regex")
    chosen = {n: str(rule[n]) for n in names if rule.get(n) is not None}
    try:
        rules = Rules(**chosen, mac_only_encrypted=bool(rule.get("mac_only_encrypted", False)))
    except ValueError as exc:
        raise CreationError(f"{source}: {exc}") from None
    for path in _READABLE:
        if rules.encrypts(path):
            raise CreationError(
                f"{source} would encrypt {'.'.join(path)}, which must stay readable in review; "
                "add `encrypted_regex: ^(username|password)$` to the rule"
            )
    return CreationRule(recipients, rules, source)


def render_credential(
    name: str,
    username: Secret,
    password: Secret,
    registry: str | None,
    rule: CreationRule,
    *,
    now: datetime,
    file: str,
) -> str:
    """The encrypted manifest text. The plaintext exists only inside this call."""
    spec: dict[str, str] = {}
    if registry:
        spec["registry"] = registry
    spec["username"] = username.reveal()
    spec["password"] = password.reveal()
    hidden = (username, password)
    return encrypt_manifest("ImageCredential", name, spec, hidden, rule, now=now, file=file)


def encrypt_manifest(
    kind: str,
    name: str,
    spec: Mapping[str, Any],
    hidden: Sequence[Secret],
    rule: CreationRule,
    *,
    now: datetime,
    file: str,
) -> str:
    """A manifest holding the plaintext `hidden` (in `spec`), encrypted by `rule`: the
    plaintext exists only inside this call, and an error never repeats it."""
    document = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    plain = yaml.safe_dump(document, sort_keys=False)
    try:
        return encrypt(plain, rule.recipients, rule.rules, now=now, file=file)
    except SopsError as exc:
        raise CreationError(f"{file}: {exc.reason}") from None
    except ValueError as exc:
        raise CreationError(f"{file}: {_scrub(str(exc), *hidden)}") from None


def _scrub(message: str, *secrets: Secret) -> str:
    for secret in secrets:
        if secret.reveal():
            message = message.replace(secret.reveal(), "********")
    return message

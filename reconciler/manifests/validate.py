"""Validate a whole repository: load every file, check every document, apply the catalog rules."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.manifests.appsecrets import decrypt_secrets
from reconciler.manifests.catalog import ANY_NAME, Catalog, build_catalog
from reconciler.manifests.check import Checked, check_document
from reconciler.manifests.credentials import (
    Credential,
    decrypt_credentials,
    sealed,
    structure_only,
    unseal,
)
from reconciler.manifests.load import Document, load_bytes, read_tree
from reconciler.manifests.model import Manifest
from reconciler.manifests.problems import Problem, Severity
from reconciler.secrets.secret import Secret
from reconciler.secrets.sops import Identity


@dataclass(frozen=True)
class Report:
    documents: int
    problems: list[Problem]
    catalog: Catalog
    credentials: Mapping[str, Credential] = field(default_factory=dict, repr=False)
    # Secret name → key → value, decrypted (see reconciler.manifests.appsecrets)
    secrets: Mapping[str, Mapping[str, Secret]] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def valid(self) -> bool:
        return not self.errors


def validate_files(
    files: Iterable[tuple[str, bytes | Problem]], identities: Sequence[Identity] | None = None
) -> Report:
    """Every finding at once; a bad document never hides the findings of the others.

    `identities` are age keys for the credentials: None leaves them encrypted (structure only,
    silently); an empty list says so with a warning per credential; keys decrypt them, and a
    credential that fails to decrypt or verify is an error at its file. A credential encrypted
    whole (kind and name too) has no structure to check without a key: an error either way.
    """
    with no_gc_pauses():
        report = combine([check_file(path, content, identities or ()) for path, content in files])
    return with_secrets(with_credentials(report, identities, decrypt_credentials), identities)


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """Loading allocates millions of long-lived objects and no cycles; the cyclic collector
    would scan them again and again (about half the run time on 10,000 documents)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file gives on its own, before any rule across files: the unit an incremental
    validation keeps (`reconciler.manifests.incremental`), so both validations share it."""

    documents: int
    loaded: tuple[Problem, ...]  # findings of reading and parsing it
    checked: tuple[Checked[Manifest], ...]
    found: tuple[Problem, ...]  # findings of checking (and unsealing) its documents, in order
    broken: frozenset[tuple[str, str]]  # what its documents that failed would have defined


def check_file(path: str, content: bytes | Problem, identities: Sequence[Identity]) -> FileResult:
    """Load one file and check each of its documents."""
    documents, loaded = (
        ([], [content]) if isinstance(content, Problem) else load_bytes(path, content)
    )
    found: list[Problem] = []
    checked: list[Checked[Manifest]] = []
    broken = {(p.kind, p.name) for p in loaded if p.kind and p.name}
    for each in documents:
        document = unseal(each, identities) if sealed(each) else each
        if isinstance(document, Problem):
            found.append(document)
            broken.add(("ImageCredential", ANY_NAME))  # its name is encrypted too
            continue
        result = check_document(document)
        if isinstance(result, Checked):
            checked.append(result)
        else:
            found.extend(result)
            broken.update(_names(document))
    return FileResult(
        len(documents), tuple(loaded), tuple(checked), tuple(found), frozenset(broken)
    )


def combine(files: Sequence[FileResult]) -> Report:
    """The report of a repository from its files' results, in the repository's file order:
    the catalog and its rules across documents. Credentials are not decrypted yet."""
    problems = [p for file in files for p in file.loaded]
    problems.extend(p for file in files for p in file.found)
    broken = set().union(*(file.broken for file in files))
    catalog, cross = build_catalog((e for file in files for e in file.checked), broken)
    problems.extend(cross)
    problems.sort(key=Problem.sort_key)
    return Report(sum(file.documents for file in files), problems, catalog)


Decrypt = Callable[[Catalog, Sequence[Identity]], tuple[dict[str, Credential], list[Problem]]]


def with_credentials(
    report: Report, identities: Sequence[Identity] | None, decrypt: Decrypt
) -> Report:
    """`report` with its credentials decrypted by `decrypt` (see `validate_files`)."""
    if identities is None or not report.catalog.credentials:
        return report
    credentials: dict[str, Credential] = {}
    if not identities:
        extra = structure_only(report.catalog)
    else:
        credentials, extra = decrypt(report.catalog, identities)
    problems = sorted([*report.problems, *extra], key=Problem.sort_key)
    return replace(report, problems=problems, credentials=credentials)


def with_secrets(report: Report, identities: Sequence[Identity] | None) -> Report:
    """`report` with its Secrets decrypted, as its credentials (see `validate_files`)."""
    if identities is None or not report.catalog.secrets:
        return report
    secrets, extra = decrypt_secrets(report.catalog, identities)
    problems = sorted([*report.problems, *extra], key=Problem.sort_key)
    return replace(report, problems=problems, secrets=secrets)


def _names(document: Document) -> Iterator[tuple[str, str]]:
    """What a broken document would define, so references to it add no second error."""
    kind, name = document.kind, document.name
    if kind and name:
        yield kind, name
    spec = document.data.get("spec") if isinstance(document.data, dict) else None
    if kind == "Release" and isinstance(spec, dict):
        yield "Release@", f"{spec.get('application')}@{spec.get('version')}"


def validate_tree(root: Path, identities: Sequence[Identity] | None = None) -> Report:
    return validate_files(read_tree(root), identities)

"""Validate a whole repository: load every file, check every document, apply the catalog rules."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.manifests.catalog import ANY_NAME, Catalog, build_catalog
from reconciler.manifests.check import Checked, check_document
from reconciler.manifests.credentials import (
    Credential,
    decrypt_credentials,
    sealed,
    structure_only,
    unseal,
)
from reconciler.manifests.load import Document, load_files, read_tree
from reconciler.manifests.model import Manifest
from reconciler.manifests.problems import Problem, Severity
from reconciler.secrets.sops import Identity


@dataclass(frozen=True)
class Report:
    documents: int
    problems: list[Problem]
    catalog: Catalog
    credentials: Mapping[str, Credential] = field(default_factory=dict, repr=False)

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
    with _no_gc_pauses():
        report = _validate(files, identities or ())
    if identities is None or not report.catalog.credentials:
        return report
    credentials: dict[str, Credential] = {}
    if not identities:
        extra = structure_only(report.catalog)
    else:
        credentials, extra = decrypt_credentials(report.catalog, identities)
    problems = sorted([*report.problems, *extra], key=Problem.sort_key)
    return replace(report, problems=problems, credentials=credentials)


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Loading allocates millions of long-lived objects and no cycles; the cyclic collector
    would scan them again and again (about half the run time on 10,000 documents)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validate(
    files: Iterable[tuple[str, bytes | Problem]], identities: Sequence[Identity]
) -> Report:
    loaded = load_files(files)
    problems = list(loaded.problems)
    checked: list[Checked[Manifest]] = []
    broken = {(p.kind, p.name) for p in loaded.problems if p.kind and p.name}
    for found in loaded.documents:
        document = unseal(found, identities) if sealed(found) else found
        if isinstance(document, Problem):
            problems.append(document)
            broken.add(("ImageCredential", ANY_NAME))  # its name is encrypted too
            continue
        result = check_document(document)
        if isinstance(result, Checked):
            checked.append(result)
        else:
            problems.extend(result)
            broken.update(_names(document))
    catalog, cross = build_catalog(checked, broken)
    problems.extend(cross)
    problems.sort(key=Problem.sort_key)
    return Report(len(loaded.documents), problems, catalog)


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

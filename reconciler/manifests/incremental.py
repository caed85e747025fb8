"""Validate a commit from the previous commit's validation, doing again only what changed.

A file whose key (a git blob id, or a digest of its content) is the one it had is neither read,
parsed nor checked again, and a credential in it is not decrypted again: at 10,000 devices that
is nearly all the work. The rules across documents (the catalog) still run over the whole
repository, from the kept results: that costs a small part of loading and checking.

The report is exactly `validate_files`'s on the same files, because both are made of the same
parts: each file's `check_file`, then `combine` and `with_credentials`. Pure: the content is read
through the `read` the source gives with each file, only for a file not kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from reconciler.manifests.catalog import Catalog
from reconciler.manifests.check import Checked
from reconciler.manifests.credentials import Credential, decrypt_credential, gather_credentials
from reconciler.manifests.model import ImageCredential
from reconciler.manifests.problems import Problem
from reconciler.manifests.validate import (
    FileResult,
    Report,
    check_file,
    combine,
    no_gc_pauses,
    with_credentials,
    with_secrets,
)
from reconciler.secrets.sops import Identity

Content = bytes | Problem


@dataclass(frozen=True, slots=True)
class Keyed:
    """A manifest file: its path, a key that changes whenever its content does, and how to
    read the content (called only when the file's result is not kept)."""

    path: str
    key: str
    read: Callable[[], Content] = field(repr=False, compare=False)


def keyed(files: Iterable[tuple[str, Content]]) -> Iterator[Keyed]:
    """Files from a source that gives only content, keyed by a digest of it: each is still
    read, but an unchanged one is not parsed nor checked again."""
    for path, content in files:
        yield known(path, content)


def known(path: str, content: Content) -> Keyed:
    """A file whose content is at hand, keyed by a digest of it."""
    return Keyed(path, _digest(content), partial(_given, content))


def _digest(content: Content) -> str:
    if isinstance(content, Problem):
        return f"problem {content!r}"
    return hashlib.blake2b(content, digest_size=20).hexdigest()


def _given(content: Content) -> Content:
    return content


@dataclass(frozen=True, slots=True)
class _Kept:
    key: str
    result: FileResult


# A decrypted credential (or why it is not) by the identity of its catalog entry: an unchanged
# file keeps its entries, the very same objects, so an entry kept is the same document. The
# entry is held with its result so that its id cannot be reused by another object meanwhile.
_Decrypted = Mapping[int, tuple[Checked[ImageCredential], Credential | Problem]]


@dataclass(frozen=True, eq=False)
class Validation:
    """A commit's report, and what validating the next commit reuses of it.

    The kept parts hold decrypted credentials: they stay out of the repr (a `Credential` masks
    its secrets anyway), and the value is never compared.
    """

    report: Report
    files: Mapping[str, _Kept] = field(default_factory=dict, repr=False)
    decrypted: _Decrypted = field(default_factory=dict, repr=False)
    # the age keys it was made with, compared by identity (a key's text is its secret)
    identities: tuple[Identity, ...] | None = field(default=None, repr=False)


def validate_changes(
    previous: Validation | None,
    files: Iterable[Keyed],
    identities: Sequence[Identity] | None = None,
) -> Validation:
    """`validate_files` of `files` (see it for `identities`), reusing `previous` where a file's
    key is unchanged. Other keys than `previous`'s start from nothing: unsealing and
    decrypting depend on them."""
    keys = None if identities is None else tuple(identities)
    reuse = previous is not None and _same(previous.identities, keys)
    kept = previous.files if previous is not None and reuse else {}
    decrypted = previous.decrypted if previous is not None and reuse else {}
    now: dict[str, _Kept] = {}
    results: list[FileResult] = []
    with no_gc_pauses():
        for file in files:
            found = kept.get(file.path)
            if found is None or found.key != file.key:
                found = _Kept(file.key, check_file(file.path, file.read(), keys or ()))
            now[file.path] = found
            results.append(found.result)
        report = combine(results)

    fresh: dict[int, tuple[Checked[ImageCredential], Credential | Problem]] = {}

    def decrypt(entry: Checked[ImageCredential]) -> Credential | Problem:
        held = decrypted.get(id(entry))
        if held is not None and held[0] is entry:
            result = held[1]
        else:
            result = decrypt_credential(entry, keys or ())
        fresh[id(entry)] = (entry, result)
        return result

    def gather(
        catalog: Catalog, _: Sequence[Identity]
    ) -> tuple[dict[str, Credential], list[Problem]]:
        return gather_credentials(catalog, decrypt)

    report = with_secrets(with_credentials(report, keys, gather), keys)
    return Validation(report, now, fresh, keys)


def _same(before: tuple[Identity, ...] | None, after: tuple[Identity, ...] | None) -> bool:
    if before is None or after is None:
        return before is after
    return len(before) == len(after) and all(a is b for a, b in zip(before, after, strict=True))

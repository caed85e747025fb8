"""Read a tree of YAML files into documents that remember where every value came from.

Parsing is done by libyaml (PyYAML's C composer). Only the plain data is kept: when a finding needs
a line and column, the file's text is composed again (rarely, and cached), which keeps memory and
garbage-collector work low on large repositories. Hostile input — invalid
YAML or UTF-8, huge files, alias bombs, deep nesting, odd tags — becomes a Problem, never a
traceback.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import pathspec
import yaml

from reconciler.errors import HedgerowError
from reconciler.manifests.problems import FieldPath, Problem

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64
_INTERNED = 64  # longest string value kept once however many documents repeat it
IGNORE_FILE = ".hedgerowignore"
SUFFIXES = (".yaml", ".yml")

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """The C loader with a lean resolver: no path resolvers, so no Python call per node for them.

    Tags are resolved exactly as PyYAML's SafeLoader does (YAML 1.1 implicit types).
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], ()):
                    if regexp.match(value):
                        return str(tag)
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


_IMPLICIT: dict[str, list[tuple[str, Any]]] = yaml.resolver.Resolver.yaml_implicit_resolvers
_scalars = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_NULL = "tag:yaml.org,2002:null"


class Identity(NamedTuple):
    """The data of a checked document, as `Checked.document` gives it again: its typed
    manifest holds the rest."""

    kind: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: its plain data, and the text it came from, for line and column.

    The text is kept compressed (`packed`, shared by the documents of a file): it is read
    again only to locate a finding or decrypt a credential, and a fleet's validation keeps
    every file's (about 430 bytes a device as text, a tenth of that compressed)."""

    file: str
    packed: bytes = field(repr=False, compare=False)  # the file's content, `pack`ed
    index: int
    data: Any

    @property
    def text(self) -> str:
        return unpack(self.packed)

    @property
    def kind(self) -> str | None:
        if isinstance(self.data, Identity):
            return self.data.kind
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        if isinstance(self.data, Identity):
            return self.data.name
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    def locate(self, path: FieldPath, *, at_key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the deepest node on `path` that exists.

        `at_key` points at the mapping key instead of its value, for "unknown field" findings.
        """
        node = _compose(self.packed)[self.index]
        mark = node.start_mark
        for i, part in enumerate(path):
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in _entries(node):
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        last = i == len(path) - 1
                        mark = key.start_mark if (at_key and last) else value.start_mark
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                child = node.value[part] if 0 <= part < len(node.value) else None
                mark = child.start_mark if child is not None else mark
            if child is None:
                break
            node = child
        return mark.line + 1, mark.column + 1


@dataclass(frozen=True, slots=True)
class Loaded:
    documents: list[Document]
    problems: list[Problem]


class _Refused(HedgerowError):
    """A document that cannot be turned into data; carries the node it is about."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def read_tree(root: Path) -> Iterator[tuple[str, bytes | Problem]]:
    """Yield (path relative to root, content) for every manifest file, sorted for stable output.

    Hidden files and folders are skipped; `.hedgerowignore` at the root excludes paths.
    """
    spec = _ignore_spec(root)
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not skip_folder((rel_folder / d).as_posix(), spec)]
        for name in files:
            rel = (rel_folder / name).as_posix()
            if is_manifest_path(rel, spec):
                found.append(rel)
    for rel in sorted(found):
        yield rel, _read_file(root / rel, rel)


def ignore_spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """`.hedgerowignore` lines, with gitignore semantics (negation, anchoring, `**`)."""
    return pathspec.GitIgnoreSpec.from_lines(lines)


def skip_folder(rel: str, spec: pathspec.GitIgnoreSpec | None) -> bool:
    """Whether a folder (posix path relative to the root) is left out with everything in it.

    Like git, a file inside an excluded folder cannot be re-included by a `!pattern`.
    """
    return rel.rpartition("/")[2].startswith(".") or _ignored(spec, rel + "/")


def is_manifest_path(rel: str, spec: pathspec.GitIgnoreSpec | None) -> bool:
    """The one rule for which files are manifests, for a folder on disk and a git tree alike."""
    folder, _, name = rel.rpartition("/")
    if name.startswith(".") or not name.endswith(SUFFIXES) or _ignored(spec, rel):
        return False
    parts = folder.split("/") if folder else []
    return not any(skip_folder("/".join(parts[: i + 1]), spec) for i in range(len(parts)))


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = (root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return ignore_spec(lines)


def _ignored(spec: pathspec.GitIgnoreSpec | None, rel: str) -> bool:
    return spec is not None and spec.match_file(rel)


def _read_file(path: Path, rel: str) -> bytes | Problem:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return _file_problem(rel, f"file is {size} bytes; manifests are limited to 1 MiB")
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return _file_problem(rel, f"cannot read file: {exc.strerror or exc}")


def _file_problem(rel: str, message: str, line: int = 0, column: int = 0) -> Problem:
    return Problem(rel, line, column, None, None, None, message)


def load_files(files: Iterable[tuple[str, bytes | Problem]]) -> Loaded:
    """Parse every file; a bad file or document becomes a Problem and the rest still load."""
    documents: list[Document] = []
    problems: list[Problem] = []
    for rel, content in files:
        if isinstance(content, Problem):
            problems.append(content)
            continue
        docs, probs = load_bytes(rel, content)
        documents.extend(docs)
        problems.extend(probs)
    return Loaded(documents, problems)


def load_bytes(rel: str, content: bytes) -> tuple[list[Document], list[Problem]]:
    if len(content) > MAX_FILE_BYTES:
        return [], [_file_problem(rel, "file is over 1 MiB; manifests are limited to 1 MiB")]
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        column = exc.start - (content.rfind(b"\n", 0, exc.start) + 1) + 1
        return [], [_file_problem(rel, "file is not valid UTF-8", line, column)]
    documents: list[Document] = []
    problems: list[Problem] = []
    packed: bytes | None = None
    may_alias = "&" in text
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None or _is_empty(node):
                continue
            try:
                if may_alias:
                    _check_expansion(node)
                data = _construct(node, 0)
            except _Refused as exc:
                mark = exc.node.start_mark
                kind, name = _identity(node)
                problems.append(
                    Problem(rel, mark.line + 1, mark.column + 1, kind, name, None, exc.message)
                )
                continue
            packed = pack(content) if packed is None else packed
            documents.append(Document(rel, packed, index, data))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        parts = [p for p in (exc.context, exc.problem) if p]
        lines = text.splitlines()
        if mark and mark.line < len(lines) and "\t" in lines[mark.line]:
            parts.append("YAML does not allow tabs for indentation: use spaces")
        problems.append(_file_problem(rel, "invalid YAML: " + ", ".join(parts), line, column))
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        message = f"invalid YAML: control character U+{code:04X} is not allowed"
        problems.append(_file_problem(rel, message, line, column))
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        problems.append(_file_problem(rel, f"invalid YAML: {type(exc).__name__}"))
    return documents, problems


def _is_empty(node: yaml.Node) -> bool:
    """A document with no content (`---` alone, or only comments), unlike an explicit `null`."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL and node.value == ""


def _identity(node: yaml.Node) -> tuple[str | None, str | None]:
    """Kind and name of a document that could not be loaded, when they can still be read."""
    kind = name = None
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "kind" and isinstance(value, yaml.ScalarNode):
                kind = value.value
            elif key.value == "metadata" and isinstance(value, yaml.MappingNode):
                for k, v in value.value:
                    if k.value == "name" and isinstance(v, yaml.ScalarNode):
                        name = v.value
    return kind, name


def pack(content: bytes) -> bytes:
    """A file's content compressed, as documents keep it (fast: once a file at load)."""
    return zlib.compress(content, 1)


def unpack(packed: bytes) -> str:
    """The text of a `pack`ed file, as it was loaded."""
    return zlib.decompress(packed).decode("utf-8-sig")


@lru_cache(maxsize=16)
def _compose(packed: bytes) -> list[yaml.Node]:
    """The documents of a file up to the first that does not parse (later ones were refused)."""
    nodes: list[yaml.Node] = []
    try:
        for node in yaml.compose_all(unpack(packed), Loader=_Loader):
            nodes.append(node)
    except (yaml.YAMLError, RecursionError, ValueError):
        pass
    return nodes


def _check_expansion(root: yaml.Node) -> None:
    """Refuse alias bombs and recursive aliases before any expansion happens."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(node, "recursive alias: an anchor cannot contain an alias to itself")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        active.discard(key)
        if total > MAX_NODES:
            raise _Refused(node, f"aliases expand to over {MAX_NODES} values; refusing to expand")
        sizes[key] = total
        return total

    size(root)


def _entries(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """Mapping entries with merge keys (`<<: *base`) flattened; explicit keys come first."""
    merges: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE:
            merges.append(value)
        else:
            yield key, value
    for merged in merges:
        sources = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
        for source in sources:
            if isinstance(source, yaml.MappingNode):
                yield from _entries(source)


def _construct(node: yaml.Node, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise _Refused(node, f"nesting is deeper than {MAX_DEPTH} levels")
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            raise _Refused(node, f"unsupported YAML tag {node.tag!r}")
        return [_construct(item, depth + 1) for item in node.value]
    if isinstance(node, yaml.MappingNode):
        if node.tag != "tag:yaml.org,2002:map":
            raise _Refused(node, f"unsupported YAML tag {node.tag!r}")
        return _mapping(node, depth)
    raise _Refused(node, "unsupported YAML node")


def _mapping(node: yaml.MappingNode, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    has_merge = False
    for key, value in node.value:
        if key.tag == _MERGE:
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            if not all(isinstance(s, yaml.MappingNode) for s in sources):
                raise _Refused(value, "a merge key (<<) needs a mapping or a list of mappings")
            has_merge = True
            continue
        if not isinstance(key, yaml.ScalarNode):
            raise _Refused(key, "mapping keys must be plain strings")
        if key.value in out:
            raise _Refused(key, _duplicate(node, key))
        out[key.value] = _construct(value, depth + 1)
    if has_merge:
        for key, value in _entries(node):
            if isinstance(key, yaml.ScalarNode) and key.value not in out:
                out[key.value] = _construct(value, depth + 1)
    return out


def _duplicate(node: yaml.MappingNode, key: yaml.Node) -> str:
    first = next(
        k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == key.value
    )
    return f"duplicate key {key.value!r} (first defined on line {first.start_mark.line + 1})"


def _scalar(node: yaml.ScalarNode) -> Any:
    tag = node.tag
    if tag == _STR or tag == "tag:yaml.org,2002:timestamp":
        value: str = node.value
        # names, kinds, versions and states repeat across thousands of documents: one copy
        return sys.intern(value) if len(value) <= _INTERNED else value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return _scalars.construct_yaml_bool(node)
    if tag == "tag:yaml.org,2002:int":
        try:
            return _scalars.construct_yaml_int(node)
        except ValueError:
            raise _Refused(node, "integer is too large") from None
    if tag == "tag:yaml.org,2002:float":
        return _scalars.construct_yaml_float(node)
    raise _Refused(node, f"unsupported YAML tag {tag!r}; use plain strings, numbers and booleans")

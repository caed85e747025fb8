"""Turn one loaded document into a typed manifest, or into findings that say how to fix it."""

from __future__ import annotations

import difflib
import re
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler import API_VERSION
from reconciler.manifests.load import Document, Identity
from reconciler.manifests.model import KINDS, Manifest
from reconciler.manifests.problems import FieldPath, Problem, Severity, render_path

M = TypeVar("M", bound=Manifest, covariant=True)


@dataclass(frozen=True, slots=True)
class Checked(Generic[M]):
    """A valid manifest and where its document is (file, text and index), for locating later
    findings. Its plain data is not kept: a fleet's validation keeps every manifest, and the
    data, or even a `Document` object each, were a large part of it (about 1.5 KiB a
    document); `document` gives one again, for locating."""

    manifest: M
    file: str
    packed: bytes = field(repr=False, compare=False)  # the file's content (`load.pack`)
    index: int

    @property
    def name(self) -> str:
        return self.manifest.metadata.name

    @property
    def document(self) -> Document:
        return Document(self.file, self.packed, self.index, Identity(self.manifest.kind, self.name))

    def problem(
        self, path: FieldPath, message: str, severity: Severity = Severity.ERROR
    ) -> Problem:
        return problem_at(self.document, path, message, severity)


def problem_at(
    document: Document,
    path: FieldPath,
    message: str,
    severity: Severity = Severity.ERROR,
    *,
    at_key: bool = False,
) -> Problem:
    line, column = document.locate(path, at_key=at_key)
    return Problem(
        document.file,
        line,
        column,
        document.kind,
        document.name,
        render_path(path) or None,
        message,
        severity,
    )


# What users of other tools write for one of our fields: a compose user's `devices:` means
# `deviceMappings`, though `deviceRequests` (GPUs) is spelt closer.
KNOWN_AS = {"devices": "deviceMappings"}


def suggest(word: str, options: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else ``. A word close to another
    tool's name for an option (`KNOWN_AS`) suggests that option."""
    names = list(options)
    aliases = {alias: name for alias, name in KNOWN_AS.items() if name in names}
    close = difflib.get_close_matches(word, [*names, *aliases], n=1, cutoff=0.65)
    return f" (did you mean {aliases.get(close[0], close[0])!r}?)" if close else ""


def check_document(document: Document) -> Checked[Manifest] | list[Problem]:
    data = document.data
    if not isinstance(data, dict):
        return [
            problem_at(
                document,
                (),
                "a manifest must be a mapping with apiVersion, kind, metadata and spec; "
                f"this document is {_type_name(data)}",
            )
        ]
    kind = data.get("kind")
    if kind is None:
        return [problem_at(document, (), f"kind is missing; use one of {', '.join(KINDS)}")]
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        hint = ""
        if isinstance(kind, str) and kind.startswith("ENC["):
            hint = (
                "; the whole file was encrypted: let sops encrypt only the secrets with "
                "`encrypted_regex: ^(username|password)$` in .sops.yaml"
            )
        shown = kind if isinstance(kind, str) else _type_name(kind)
        return [
            problem_at(
                document,
                ("kind",),
                f"unknown kind {shown!r}{suggest(str(kind), KINDS)}; "
                f"use one of {', '.join(KINDS)}{hint}",
            )
        ]
    try:
        manifest = model.model_validate(data)
    except ValidationError as exc:
        return [_to_problem(document, model, error) for error in exc.errors(include_input=True)]
    problems = [problem_at(document, ("spec", *p), msg) for p, msg in manifest.spec.findings()]
    if problems:
        return problems
    return Checked(_compact(manifest), document.file, document.packed, document.index)


_EMPTY: dict[str, Any] = {}  # the empty mapping of every manifest (labels, annotations...)
# Equal label mappings and equal parts of manifests (a device's spec, its labels), one object
# each: the devices of a site or a group hold the same. Forgotten past a bound, so unique ones
# cost nothing for long.
_SHARED: dict[Any, Any] = {}
_SHARED_BOUND = 4096


def _compact(model: Manifest) -> Manifest:
    """`model` holding what equal manifests share: one empty mapping, one object for equal
    parts (a device's spec, its labels), and dictionaries of attributes that share their keys
    (besides the strings the loader interns and the set of given fields, see `Model`). A
    fleet's validation keeps every manifest (the rules across documents run on them at each
    commit); manifests are frozen and never changed in place, so sharing is safe. Equal in
    value, so the report is the same."""
    _compact_model(model)
    return model


def _compact_model(model: BaseModel) -> None:
    values = model.__dict__
    for name, value in values.items():
        shared = _compact_value(value)
        if shared is not value:
            values[name] = shared
    object.__setattr__(model, "__dict__", _key_sharing(type(model), values))


# A plain class per model class, whose instances' dictionaries share one table of keys.
_VALUES: dict[type[BaseModel], type] = {}


def _key_sharing(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """`values` as a dictionary that shares its keys with every other of `model` (PEP 412, as
    any instance's `__dict__`): pydantic builds each model's with a table of its own keys, 184
    to 272 bytes, where a key-sharing one is about 120. Equal as a dictionary in every way;
    should the keys differ in order, it is an ordinary dictionary again, and no smaller."""
    holder = _VALUES.get(model)
    if holder is None:
        holder = _VALUES[model] = type(f"{model.__name__}Values", (), {})
    instance = holder()
    for name, value in values.items():
        setattr(instance, name, value)
    shared: dict[str, Any] = instance.__dict__
    return shared


def _shared(key: Any, value: Any) -> Any:
    """The object equal to `value` (by `key`) kept before, or `value`, kept from now on."""
    found = _SHARED.get(key)
    if found is None:
        if len(_SHARED) >= _SHARED_BOUND:
            _SHARED.clear()
        found = _SHARED[key] = value
    return found


def _compact_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        _compact_model(value)
        fields = value.__dict__
        # only strings: equal values are then of one type (1 == True, a str equals a str only)
        if all(v is None or type(v) is str for v in fields.values()):
            return _shared((type(value), tuple(fields.items())), value)
    elif type(value) is dict:
        if not value:
            return _EMPTY
        if all(type(k) is str and type(v) is str for k, v in value.items()):
            labels = {sys.intern(k): sys.intern(v) for k, v in value.items()}
            return _shared((dict, tuple(labels.items())), labels)
        for k, v in value.items():
            value[k] = _compact_value(v)
    elif type(value) is list:
        for i, item in enumerate(value):
            value[i] = _compact_value(item)
    return value


def _to_problem(document: Document, model: type[BaseModel], error: ErrorDetails) -> Problem:
    # "[key]" marks a mapping's key; "union:*" the form tried of a field taking two forms
    loc: FieldPath = tuple(
        p for p in error["loc"] if p != "[key]" and not str(p).startswith("union:")
    )
    kind = error["type"]
    at_key = False
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc[:-1])
        field = str(loc[-1])
        message = f"unknown field {field!r}{suggest(field, allowed)}"
        if allowed:
            message += f"; allowed here: {', '.join(allowed)}"
        at_key = True
    elif kind == "missing":
        message = f"required field {loc[-1]!s} is missing"
    elif loc == ("apiVersion",):
        message = f"apiVersion must be {API_VERSION}"
    else:
        message = _message(error)
    return problem_at(document, loc, message, at_key=at_key)


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "float_type": "a number",
}


def _message(error: ErrorDetails) -> str:
    if error["type"] == "literal_error":
        options = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        got = error.get("input")
        hint = suggest(got, options) if isinstance(got, str) else ""
        shown = repr(got) if isinstance(got, str) else _type_name(got)
        return f"must be one of {', '.join(options)}; got {shown}{hint}"
    if error["type"] == "string_too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    expected = _EXPECTED.get(error["type"])
    if expected is None:
        return error["msg"]
    got = error.get("input")
    message = f"expected {expected}, got {_type_name(got)}"
    if expected == "a string" and isinstance(got, bool | int | float):
        message += "; quote the value in YAML"
    return message


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _allowed_fields(model: type[BaseModel], loc: FieldPath) -> list[str]:
    """The YAML field names accepted at `loc`, for did-you-mean."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            current = next(
                (f.annotation for n, f in current.model_fields.items() if f.alias == part), None
            )
        else:
            current = typing.get_args(current)[-1] if typing.get_args(current) else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional, keeping the interesting type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:  # two forms (a name or a mapping): the mapping's fields
                models = [a for a in map(_unwrap, rest) if isinstance(a, type)]
                found = [a for a in models if issubclass(a, BaseModel)]
                return found[0] if found else annotation
            annotation = rest[0]
        else:
            return annotation

"""Compose's variable rules, as `docker compose` applies them to every string value:
`$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
`${VAR:?message}` / `${VAR?message}` (an error), and `$$` for a literal `$`. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reconciler.errors import HedgerowError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(
    rf"\$(?:(\$)|({_NAME})|\{{({_NAME})(?:(:?[-?])((?:[^{{}}]|\{{[^{{}}]*\}})*))?\}}|(.?))"
)


class InterpolationError(HedgerowError):
    """A `${VAR:?message}` whose variable is missing, or a `$` compose cannot read."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with its variables replaced from `env`; a variable neither set nor defaulted is
    the empty string, as compose does (it warns; `missing` lists them for the caller)."""

    def replace(match: re.Match[str]) -> str:
        dollar, bare, braced, operator, argument, _ = match.groups()
        if dollar:
            return "$"
        if bare:
            return env.get(bare, "")
        if braced is None:
            raise InterpolationError(f"invalid variable in {text!r}: write $$ for a literal $")
        value = env.get(braced)
        if operator in (":-", "-"):
            empty = value is None or (operator == ":-" and value == "")
            return interpolate(argument or "", env) if empty else str(value)
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                raise InterpolationError(f"{braced}: {argument or 'is required'}")
            return value
        return value or ""

    return _TOKEN.sub(replace, text)


def missing(text: str, env: Mapping[str, str]) -> list[str]:
    """The variables `text` uses without a value or a default."""
    found = []
    for match in _TOKEN.finditer(text):
        _, bare, braced, operator, _, _ = match.groups()
        name = bare or braced
        if name and name not in env and operator is None:
            found.append(name)
    return found


def interpolate_tree(data: Any, env: Mapping[str, str]) -> Any:
    """Every string value (not key) of a YAML tree interpolated, as compose does."""
    if isinstance(data, str):
        return interpolate(data, env)
    if isinstance(data, list):
        return [interpolate_tree(item, env) for item in data]
    if isinstance(data, dict):
        return {key: interpolate_tree(value, env) for key, value in data.items()}
    return data


def read_env_file(text: str) -> dict[str, str]:
    """A `.env` or `env_file`: `KEY=VALUE` lines (`export ` allowed, `#` comments, values in
    single or double quotes taken without them), as compose reads them."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, equals, value = line.partition("=")
        key = key.strip()
        if not re.fullmatch(_NAME, key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        found[key] = value if equals else ""
    return found

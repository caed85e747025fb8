"""The loader's fast resolver must type scalars exactly as PyYAML's SafeLoader does."""

from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.manifests.load import _Loader, load_bytes

SAMPLES = [
    "yes", "No", "on", "OFF", "true", "False", "~", "null", "", "0x1F", "0o17", "017", "1_000",
    "-12", "+3", "1.5", "1e3", ".inf", "-.Inf", ".nan", "2024-01-01", "2024-01-01T10:00:00Z",
    "1:20", "190:20:30", "1.0.0", "v1", "=", "<<", "hello world", "0b101", "1.", ".5",
]  # fmt: skip


def _tag(text: str, loader: type) -> str:
    node = yaml.compose(f"k: {text}\n", Loader=loader)
    assert isinstance(node, yaml.MappingNode)
    return str(node.value[0][1].tag)


def test_fast_resolver_agrees_with_safe_loader_on_tricky_scalars() -> None:
    for text in SAMPLES:
        assert _tag(text, _Loader) == _tag(text, yaml.SafeLoader), text


@given(st.text(alphabet="0123456789.-+_:eExXoObB~nNulLtTrRfFaAsSyY ", max_size=12))
def test_fast_resolver_agrees_with_safe_loader(text: str) -> None:
    try:
        expected = _tag(text, yaml.SafeLoader)
    except yaml.YAMLError:
        return
    assert _tag(text, _Loader) == expected


def test_values_are_constructed_like_safe_load() -> None:
    text = "\n".join(f"k{i}: {s}" for i, s in enumerate(SAMPLES) if s not in ("<<", "="))
    (document,), problems = load_bytes("x.yaml", text.encode())
    assert problems == []
    expected = yaml.safe_load(text)
    for key, value in expected.items():
        if not hasattr(value, "isoformat"):  # dates stay strings: see test below
            assert document.data[key] == value or (value != value), key


def test_dates_stay_strings_as_written() -> None:
    (document,), _ = load_bytes("x.yaml", b"a: 2024-01-01\nb: 2024-01-01T10:00:00Z\n")
    assert document.data == {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z"}

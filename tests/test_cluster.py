"""What replicas tell each other (pure): payloads fit PostgreSQL's NOTIFY and read back whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.store.cluster import Cluster, conninfo
from reconciler.store.notices import APPLIED, OBSERVED, PAYLOAD_BYTES, observed_payloads, parse
from tests.support.properties import examples

names = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=63)


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(names, max_size=400), names)
def test_observed_devices_are_told_in_payloads_that_fit_and_read_back_whole(
    devices: list[str], sender: str
) -> None:
    payloads = list(observed_payloads(sender, devices))
    assert all(len(p.encode()) <= PAYLOAD_BYTES + 64 for p in payloads)  # under 8,000 bytes
    heard = [parse(OBSERVED, p) for p in payloads]
    assert all(n.sender == sender for n in heard)
    assert [d for n in heard for d in n.devices] == devices
    assert (payloads == []) == (devices == [])  # nothing to say: no notification


def test_an_applied_notice_names_its_commit() -> None:
    notice = parse(APPLIED, "a" * 40)
    assert notice.channel == APPLIED and notice.sha == "a" * 40


def test_the_cluster_connects_with_the_stores_url_and_never_shows_it() -> None:
    url = "postgresql+psycopg://hedgerow:s3cret@db.example:5432/fleet"
    assert conninfo(url) == "postgresql://hedgerow:s3cret@db.example:5432/fleet"
    assert "s3cret" not in repr(Cluster(url, name="a:1"))

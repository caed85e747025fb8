"""The agent's choice of controller replica (`agent.controllers`): which URL it asks after a
failure, when it backs off, and which `--controller` values it accepts. Pure: every sequence
of outcomes up to a length is checked, for one, two and three URLs."""

from __future__ import annotations

import itertools

import pytest

from agent.controllers import Controllers, Failover, parse_urls

A, B, C = "https://a:8080", "https://b:8080", "https://c:8080"


def test_one_url_waits_after_every_failure_as_a_single_controller_always_did() -> None:
    controllers = Controllers([A])
    decisions = [controllers.failed(A) for _ in range(3)]
    assert decisions == [Failover(A, A, switched=False, wait=True, rounds=n) for n in (1, 2, 3)]
    controllers.succeeded(A)
    assert controllers.failed(A).rounds == 1  # a success starts the count again


def test_the_next_url_is_tried_at_once_and_a_full_round_backs_off() -> None:
    controllers = Controllers([A, B, C])
    assert controllers.failed(A) == Failover(A, B, switched=True, wait=False, rounds=0)
    assert controllers.failed(B) == Failover(B, C, switched=True, wait=False, rounds=0)
    assert controllers.failed(C) == Failover(C, A, switched=True, wait=True, rounds=1)
    assert controllers.failed(A) == Failover(A, B, switched=True, wait=False, rounds=1)
    controllers.succeeded(B)  # B answers: the agent stays on it
    assert controllers.current == B and controllers.streak == 0
    assert controllers.failed(B) == Failover(B, C, switched=True, wait=False, rounds=0)


def test_a_failure_of_a_url_already_left_moves_nothing() -> None:
    """A long poll and a report failing on one replica at once move the agent one step."""
    controllers = Controllers([A, B, C])
    controllers.failed(A)
    assert controllers.failed(A) == Failover(A, B, switched=False, wait=False, rounds=0)
    controllers.succeeded(A)  # an answer from the one left tells nothing about B
    assert controllers.current == B and controllers.streak == 1


# One step of a sequence: the current URL fails or answers, or a URL that is not current does.
STEPS = ("fail", "answer", "fail-other", "answer-other")


@pytest.mark.parametrize("count", [1, 2, 3])
def test_every_sequence_tries_each_url_once_before_a_back_off(count: int) -> None:
    urls = [A, B, C][:count]
    steps = STEPS if count > 1 else STEPS[:2]
    for sequence in itertools.product(steps, repeat=7):
        controllers = Controllers(urls)
        since_answer: list[str] = []  # URLs failed since the last answer of the current one
        for step in sequence:
            before = (controllers.current, controllers.streak)
            other = urls[(urls.index(controllers.current) + 1) % count]
            if step == "answer":
                controllers.succeeded(controllers.current)
                assert controllers.current == before[0] and controllers.streak == 0
                since_answer = []
            elif step == "answer-other":
                controllers.succeeded(other)
                assert (controllers.current, controllers.streak) == before
            elif step == "fail-other":
                decision = controllers.failed(other)
                assert (controllers.current, controllers.streak) == before
                assert decision.current == before[0] and not decision.wait
                assert not decision.switched
            else:
                failed = controllers.current
                decision = controllers.failed(failed)
                since_answer.append(failed)
                # round robin, in the order given
                assert decision.current == urls[(urls.index(failed) + 1) % count]
                assert decision.current == controllers.current
                assert decision.switched == (count > 1)
                # a back-off only once every URL failed in a row, then once a round
                assert decision.wait == (len(since_answer) % count == 0)
                assert decision.rounds == len(since_answer) // count
                if decision.wait:
                    assert set(since_answer[-count:]) == set(urls)


def test_no_url_or_a_url_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        Controllers([])
    with pytest.raises(ValueError):
        Controllers([A, A])


@pytest.mark.parametrize(
    ("values", "urls"),
    [
        (["https://c:8080"], ["https://c:8080"]),
        (["https://c:8080/"], ["https://c:8080"]),
        (["http://a:8080, https://b/hedgerow/"], ["http://a:8080", "https://b/hedgerow"]),
        (["https://a,https://b", "https://c"], ["https://a", "https://b", "https://c"]),
        (["HTTPS://[::1]:8080"], ["HTTPS://[::1]:8080"]),
    ],
)
def test_controller_urls_are_comma_separated_or_repeated_in_order(
    values: list[str], urls: list[str]
) -> None:
    assert parse_urls(values) == urls


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("controller:8080", "'controller:8080' is not an http:// or https:// URL"),
        ("ftp://c", "'ftp://c' is not an http:// or https:// URL"),
        ("https://", "'https://' names no host"),
        ("https://:8080", "'https://:8080' names no host"),
        ("https://c:80x", "'https://c:80x' is not a valid URL"),
        ("https://c:99999", "'https://c:99999' is not a valid URL"),
        ("https://c d", "'https://c d' is not a valid URL"),
        ("https://c?x=1", "'https://c?x=1' has a query or a fragment"),
        ("https://c#x", "'https://c#x' has a query or a fragment"),
        ("https://a,,https://b", "an empty controller URL"),
        ("https://a,", "an empty controller URL"),
        ("https://a,https://a/", "'https://a' is listed twice"),
        ("https://a,ftp://b", "'ftp://b' is not an http"),
        ("https://user:s3cret@c", "'https://…@c' holds credentials"),
        ("https://user:s3cret@c:x", "'https://…@c:x' is not a valid URL"),
        ("user:s3cret@c", "'…@c' is not an http"),
    ],
)
def test_a_bad_controller_url_is_named_without_its_credentials(value: str, error: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_urls([value])
    assert error in str(refused.value) and "s3cret" not in str(refused.value)

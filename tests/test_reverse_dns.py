"""The worker's reverse-DNS lookup: bounded in time, and only plain hostnames get through."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from workers.jobs import reverse_dns_resolver


def answering(name: str) -> Callable[[str], tuple[str, list[str], list[str]]]:
    """A gethostbyaddr stand-in that answers ``name``."""
    return lambda address: (name, [], [address])


@pytest.mark.parametrize(
    ("ptr", "expected"),
    [
        ("Host-7.Example.NET.", "host-7.example.net"),
        ("<a href=x>login</a>", None),
        ("evil\x1b[2J.example", None),
        ("two words.example", None),
        ("", None),
        ("a" * 300, "a" * 253),
    ],
)
def test_ptr_answers_are_kept_only_as_plain_hostnames(ptr: str, expected: str | None) -> None:
    """A PTR record is lower-cased and kept only when it is a plain hostname."""
    assert reverse_dns_resolver(answering(ptr))("198.51.100.7") == expected


def test_lookup_failure_gives_no_name() -> None:
    """A failing lookup means no hostname, not an error."""

    def failing(address: str) -> tuple[str, list[str], list[str]]:
        raise OSError("no PTR")

    assert reverse_dns_resolver(failing)("198.51.100.7") is None


def test_non_address_input_is_not_looked_up() -> None:
    """Text that is not an IP address never reaches the lookup."""
    calls: list[str] = []

    def recording(address: str) -> tuple[str, list[str], list[str]]:
        calls.append(address)
        return ("x.example", [], [address])

    assert reverse_dns_resolver(recording)("-oN /tmp/x") is None
    assert calls == []


def test_slow_lookup_is_abandoned_after_the_timeout() -> None:
    """A resolver that never answers costs at most the timeout."""
    release = threading.Event()

    def hanging(address: str) -> tuple[str, list[str], list[str]]:
        release.wait(10)
        return ("late.example", [], [address])

    try:
        assert reverse_dns_resolver(hanging, timeout=0.2)("198.51.100.7") is None
    finally:
        release.set()

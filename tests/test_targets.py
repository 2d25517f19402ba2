"""Tests for workers.targets: the parser that turns typed text into one pinned address.

Nothing here touches DNS or the network: hostnames go through a dict-backed resolver, and the
getaddrinfo resolver is exercised against a stand-in for ``socket.getaddrinfo``.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers import targets
from workers.targets import (
    SPECIAL_PURPOSE,
    RefusalCode,
    Target,
    TargetRefused,
    parse_literal,
    parse_target,
    special_purpose,
    system_resolver,
)

MEGABYTE = 1 << 20


class RecordingResolver:
    """A dict-backed resolver that remembers every name it was asked about."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    def __call__(self, hostname: str) -> list[str]:
        """Return the stored answers for hostname, or fail like an unknown name does."""
        self.calls.append(hostname)
        if hostname not in self.answers:
            raise OSError(f"{hostname}: name or service not known")
        return self.answers[hostname]


class TimingOutResolver:
    """A resolver whose every lookup times out."""

    def __call__(self, hostname: str) -> list[str]:
        """Raise TimeoutError as a slow DNS server would."""
        raise TimeoutError(f"resolving {hostname} timed out")


def _short_id(value: object) -> str:
    return repr(value)[:40]


HOSTILE: list[tuple[str, RefusalCode]] = [
    # empty and over-long
    ("", RefusalCode.EMPTY),
    ("a" * 254, RefusalCode.TOO_LONG),
    ("1" * MEGABYTE, RefusalCode.TOO_LONG),
    ("x." * (MEGABYTE // 2), RefusalCode.TOO_LONG),
    ("\x00" * MEGABYTE, RefusalCode.TOO_LONG),
    # whitespace of every kind, anywhere
    (" ", RefusalCode.WHITESPACE),
    ("127.0.0.1\n", RefusalCode.WHITESPACE),
    (" 127.0.0.1", RefusalCode.WHITESPACE),
    ("127.0.0.1 ", RefusalCode.WHITESPACE),
    ("1.2.3.4 5.6.7.8", RefusalCode.WHITESPACE),
    ("1.2.3.4\t", RefusalCode.WHITESPACE),
    ("127.0.0.1\r\n", RefusalCode.WHITESPACE),
    ("127.0.0.1\u00a0", RefusalCode.WHITESPACE),
    ("127.0.0.1\u2003", RefusalCode.WHITESPACE),
    ("example.com\u3000", RefusalCode.WHITESPACE),
    ("a\u2028b", RefusalCode.WHITESPACE),
    ("\x0b", RefusalCode.WHITESPACE),
    ("1.2.3.4;rm -rf /", RefusalCode.WHITESPACE),
    # control characters
    ("127.0.0.1\x00", RefusalCode.CONTROL),
    ("\x00", RefusalCode.CONTROL),
    ("1.2.3.4\x1b[31m", RefusalCode.CONTROL),
    ("\x7f", RefusalCode.CONTROL),
    ("example.com\u200b", RefusalCode.CONTROL),
    ("\u202eexample.com", RefusalCode.CONTROL),
    ("\ufeff1.2.3.4", RefusalCode.CONTROL),
    ("1.2.3.4\x9b", RefusalCode.CONTROL),
    # non-ASCII: unicode digits, homoglyphs, IDN
    # "127.0.0.1" in full-width digits, escaped so this file holds no look-alikes.
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", RefusalCode.NON_ASCII),
    ("127.0.0.\u0661", RefusalCode.NON_ASCII),
    ("\u0435xample.com", RefusalCode.NON_ASCII),
    ("bücher.de", RefusalCode.NON_ASCII),
    ("例え.jp", RefusalCode.NON_ASCII),
    ("127\u30020\u30020\u30021", RefusalCode.NON_ASCII),
    ("\u212fxample.com", RefusalCode.NON_ASCII),
    # option injection
    ("-iL", RefusalCode.OPTION),
    ("-oN/tmp/x", RefusalCode.OPTION),
    ("--script=evil", RefusalCode.OPTION),
    ("-sV", RefusalCode.OPTION),
    ("-", RefusalCode.OPTION),
    ("-p1-65535", RefusalCode.OPTION),
    ("-6", RefusalCode.OPTION),
    # shell metacharacters
    ("$(reboot)", RefusalCode.SHELL),
    ("`id`", RefusalCode.SHELL),
    ("1.2.3.4;reboot", RefusalCode.SHELL),
    ("a|b", RefusalCode.SHELL),
    ("1.2.3.4&", RefusalCode.SHELL),
    ("$HOME", RefusalCode.SHELL),
    ("${IFS}", RefusalCode.SHELL),
    ("x>y", RefusalCode.SHELL),
    ("x<y", RefusalCode.SHELL),
    ("a\\b", RefusalCode.SHELL),
    ("'1.2.3.4'", RefusalCode.SHELL),
    ('"1.2.3.4"', RefusalCode.SHELL),
    ("1.2.3.4?", RefusalCode.SHELL),
    ("{1.2.3.4}", RefusalCode.SHELL),
    ("!1", RefusalCode.SHELL),
    ("~root", RefusalCode.SHELL),
    ("#1.2.3.4", RefusalCode.SHELL),
    ("(1.2.3.4)", RefusalCode.SHELL),
    ("<!channel>", RefusalCode.SHELL),
    # ranges, CIDR blocks, wildcards
    ("10.0.0.0/8", RefusalCode.RANGE),
    ("1.2.3.4-10", RefusalCode.RANGE),
    ("1.2.3.4-1.2.3.9", RefusalCode.RANGE),
    ("1-5.2.3.4", RefusalCode.RANGE),
    ("1.2.3.*", RefusalCode.RANGE),
    ("10.*.*.*", RefusalCode.RANGE),
    ("*", RefusalCode.RANGE),
    ("2001:db8::/32", RefusalCode.RANGE),
    ("::1/128", RefusalCode.RANGE),
    ("2001:db8::1-ff", RefusalCode.RANGE),
    ("192.168.0.0/255.255.0.0", RefusalCode.RANGE),
    # lists
    ("1.2.3.4,5.6.7.8", RefusalCode.LIST),
    ("a.example.com,b.example.com", RefusalCode.LIST),
    (",", RefusalCode.LIST),
    ("1.2.3.4,", RefusalCode.LIST),
    # ports
    ("1.2.3.4:80", RefusalCode.PORT),
    ("[::1]:22", RefusalCode.PORT),
    ("[2001:db8::1]:443", RefusalCode.PORT),
    ("host.example.com:22", RefusalCode.PORT),
    ("example.com:http", RefusalCode.PORT),
    # URLs and paths
    ("http://x", RefusalCode.URL),
    ("https://example.com/", RefusalCode.URL),
    ("ftp://1.2.3.4", RefusalCode.URL),
    ("ssh://root@1.2.3.4", RefusalCode.URL),
    ("example.com/admin", RefusalCode.URL),
    # brackets
    ("[2001:db8::1]", RefusalCode.BRACKET),
    ("[::1]", RefusalCode.BRACKET),
    ("[1.2.3.4]", RefusalCode.BRACKET),
    ("[", RefusalCode.BRACKET),
    # IPv6 zone ids
    ("fe80::1%eth0", RefusalCode.ZONE),
    ("fe80::1%1", RefusalCode.ZONE),
    ("fe80::1%25eth0", RefusalCode.ZONE),
    # non-canonical numeric IPv4 (inet_aton would accept most of these)
    ("2130706433", RefusalCode.NONCANONICAL),
    ("0x7f000001", RefusalCode.NONCANONICAL),
    ("0X7F000001", RefusalCode.NONCANONICAL),
    ("0x7f.1", RefusalCode.NONCANONICAL),
    ("0x7F.0.0.1", RefusalCode.NONCANONICAL),
    ("0177.0.0.1", RefusalCode.NONCANONICAL),
    ("127.1", RefusalCode.NONCANONICAL),
    ("127.0.1", RefusalCode.NONCANONICAL),
    ("127.000.000.001", RefusalCode.NONCANONICAL),
    ("1.2.3.4.", RefusalCode.NONCANONICAL),
    ("127.0.0.1.", RefusalCode.NONCANONICAL),
    ("01.2.3.4", RefusalCode.NONCANONICAL),
    ("1.2.3.0x4", RefusalCode.NONCANONICAL),
    ("256.1.1.1", RefusalCode.NONCANONICAL),
    ("1.2.3.4.5", RefusalCode.NONCANONICAL),
    ("08.1.2.3", RefusalCode.NONCANONICAL),
    ("999999999999", RefusalCode.NONCANONICAL),
    ("0", RefusalCode.NONCANONICAL),
    ("0x", RefusalCode.NONCANONICAL),
    ("example.123", RefusalCode.NONCANONICAL),
    ("example.0x1", RefusalCode.NONCANONICAL),
    # malformed IPv6
    ("1::2::3", RefusalCode.BAD_IPV6),
    ("2001:db8:::1", RefusalCode.BAD_IPV6),
    (":::", RefusalCode.BAD_IPV6),
    ("1:2:3:4:5:6:7:8:9", RefusalCode.BAD_IPV6),
    ("::ffff:01.2.3.4", RefusalCode.BAD_IPV6),
    ("gggg::1", RefusalCode.BAD_IPV6),
    ("12345::1", RefusalCode.BAD_IPV6),
    # malformed hostnames
    ("exa_mple.com", RefusalCode.BAD_HOSTNAME),
    ("example..com", RefusalCode.BAD_HOSTNAME),
    (".example.com", RefusalCode.BAD_HOSTNAME),
    ("example.com..", RefusalCode.BAD_HOSTNAME),
    ("a-.example.com", RefusalCode.BAD_HOSTNAME),
    ("example.-com", RefusalCode.BAD_HOSTNAME),
    ("x" * 64 + ".com", RefusalCode.BAD_HOSTNAME),
    (".", RefusalCode.BAD_HOSTNAME),
    # single-label names
    ("localhost", RefusalCode.SINGLE_LABEL),
    ("localhost.", RefusalCode.SINGLE_LABEL),
    ("router", RefusalCode.SINGLE_LABEL),
    ("com", RefusalCode.SINGLE_LABEL),
    # anything else outside [A-Za-z0-9.:-]
    ("user@example.com", RefusalCode.CHARACTER),
    ("a+b.example.com", RefusalCode.CHARACTER),
    ("a=b", RefusalCode.CHARACTER),
    ("1.2.3.4%", RefusalCode.CHARACTER),
    ("1.2.3.[1-5]", RefusalCode.CHARACTER),
]


@pytest.mark.parametrize(("text", "code"), HOSTILE, ids=_short_id)
def test_hostile_input_is_refused_with_its_code(text: str, code: RefusalCode) -> None:
    """Every hostile or malformed input is refused with the code of its class, before any lookup."""
    resolver = RecordingResolver()
    with pytest.raises(TargetRefused) as refused:
        parse_target(text, resolver)
    assert refused.value.code == code
    assert resolver.calls == []


def test_hostile_list_is_broad() -> None:
    """The hostile list holds at least 70 inputs and covers every parser refusal class."""
    assert len(HOSTILE) >= 70
    parser_codes = set(RefusalCode) - {RefusalCode.UNRESOLVABLE, RefusalCode.SPECIAL}
    assert {code for _, code in HOSTILE} == parser_codes


def test_ten_megabyte_input_is_refused_as_too_long() -> None:
    """A 10 MB input is refused for its length, whatever it contains."""
    with pytest.raises(TargetRefused) as refused:
        parse_target("1.2.3.4;" * (10 * MEGABYTE // 8), RecordingResolver())
    assert refused.value.code == RefusalCode.TOO_LONG


def test_max_length_is_configurable() -> None:
    """The length limit is the caller's: a shorter limit refuses what the default accepts."""
    with pytest.raises(TargetRefused) as refused:
        parse_target("203.0.113.5", RecordingResolver(), max_length=8)
    assert refused.value.code == RefusalCode.TOO_LONG


def test_hostname_over_253_characters_is_refused_even_with_a_larger_limit() -> None:
    """A raised length limit never lets a hostname exceed the DNS maximum of 253 characters."""
    name = ".".join(["a" * 60] * 5) + ".example"
    resolver = RecordingResolver({name: ["93.184.215.14"]})
    with pytest.raises(TargetRefused) as refused:
        parse_target(name, resolver, max_length=400)
    assert refused.value.code == RefusalCode.BAD_HOSTNAME
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("8.8.8.8", "8.8.8.8"),
        ("1.1.1.1", "1.1.1.1"),
        ("127.0.0.23", "127.0.0.23"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2606:4700:4700:0:0:0:0:1111", "2606:4700:4700::1111"),
        ("FE80::1", "fe80::1"),
        # Python 3.13 prints IPv4-mapped addresses with a dotted tail; 3.11 in hex.
        ("::FFFF:127.0.0.1", str(IPv6Address("::ffff:7f00:1"))),
        ("0::0", "::"),
    ],
)
def test_literal_is_accepted_in_canonical_form(text: str, canonical: str) -> None:
    """An IP literal is pinned as typed, in the canonical form ipaddress gives it."""
    resolver = RecordingResolver()
    target = parse_target(text, resolver)
    assert target.canonical == canonical
    assert target.typed == text
    assert target.hostname is None
    assert target.resolved == (target.address,)
    assert resolver.calls == []


@pytest.mark.parametrize("text", ["127.0.0.23", "::1", "203.0.113.5", "::ffff:127.0.0.1"])
def test_special_purpose_literal_is_parsed_and_left_to_policy(text: str) -> None:
    """A special-purpose literal parses; special_purpose() names it so the policy layer decides."""
    target = parse_target(text, RecordingResolver())
    assert special_purpose(target.address) is not None


@pytest.mark.parametrize("text", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_literal_is_ordinary(text: str) -> None:
    """A public address parses and is not special-purpose (parsing only; nothing is scanned)."""
    assert special_purpose(parse_target(text, RecordingResolver()).address) is None


def test_documentation_literal_is_named() -> None:
    """A documentation address parses, and special_purpose names its block."""
    target = parse_target("203.0.113.5", RecordingResolver())
    assert special_purpose(target.address) == "TEST-NET-3 documentation (203.0.113.0/24)"


def test_ipv4_mapped_literal_names_the_ipv4_it_carries() -> None:
    """::ffff:127.0.0.1 parses, and special_purpose says it embeds loopback's 127.0.0.1."""
    target = parse_target("::ffff:127.0.0.1", RecordingResolver())
    assert special_purpose(target.address) == "IPv4-mapped IPv6 address embedding 127.0.0.1"


SPECIAL_CASES: list[tuple[str, str]] = [
    ("0.1.2.3", "this network (0.0.0.0/8)"),
    ("0.0.0.0", "this host on this network (0.0.0.0/32)"),
    ("10.1.2.3", "private-use (10.0.0.0/8)"),
    ("100.64.0.1", "carrier-grade NAT shared address space (100.64.0.0/10)"),
    ("127.0.0.23", "loopback (127.0.0.0/8)"),
    ("169.254.169.254", "link-local and cloud metadata (169.254.0.0/16)"),
    ("172.31.255.254", "private-use (172.16.0.0/12)"),
    ("192.0.0.100", "IETF protocol assignments (192.0.0.0/24)"),
    ("192.0.0.1", "DS-Lite IPv4 service continuity prefix (192.0.0.0/29)"),
    ("192.0.0.8", "IPv4 dummy address (192.0.0.8/32)"),
    ("192.0.0.9", "Port Control Protocol anycast (192.0.0.9/32)"),
    ("192.0.0.10", "TURN anycast (192.0.0.10/32)"),
    ("192.0.0.170", "NAT64/DNS64 discovery (192.0.0.170/32)"),
    ("192.0.0.171", "NAT64/DNS64 discovery (192.0.0.171/32)"),
    ("192.0.2.1", "TEST-NET-1 documentation (192.0.2.0/24)"),
    ("192.31.196.1", "AS112 service (192.31.196.0/24)"),
    ("192.52.193.1", "AMT (192.52.193.0/24)"),
    ("192.88.99.1", "deprecated 6to4 relay anycast (192.88.99.0/24)"),
    ("192.168.1.1", "private-use (192.168.0.0/16)"),
    ("192.175.48.1", "AS112 direct delegation service (192.175.48.0/24)"),
    ("198.18.0.1", "benchmarking (198.18.0.0/15)"),
    ("198.19.255.255", "benchmarking (198.18.0.0/15)"),
    ("198.51.100.7", "TEST-NET-2 documentation (198.51.100.0/24)"),
    ("203.0.113.5", "TEST-NET-3 documentation (203.0.113.0/24)"),
    ("224.0.0.251", "multicast (224.0.0.0/4)"),
    ("239.255.255.250", "multicast (224.0.0.0/4)"),
    ("240.0.0.1", "reserved (240.0.0.0/4)"),
    ("255.255.255.255", "limited broadcast (255.255.255.255/32)"),
    ("::", "unspecified address (::/128)"),
    ("::1", "loopback (::1/128)"),
    ("::7f00:1", "deprecated IPv4-compatible IPv6 address embedding 127.0.0.1"),
    ("::ffff:127.0.0.1", "IPv4-mapped IPv6 address embedding 127.0.0.1"),
    ("::ffff:169.254.169.254", "IPv4-mapped IPv6 address embedding 169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64 IPv6 address embedding 127.0.0.1"),
    ("64:ff9b:1::c0a8:101", "local-use NAT64 IPv6 address embedding 192.168.1.1"),
    ("100::1", "discard-only (100::/64)"),
    ("100:0:0:1::1", "dummy IPv6 prefix (100:0:0:1::/64)"),
    ("2001:100::1", "IETF protocol assignments (2001::/23)"),
    (
        "2001:0:4136:e378:8000:63bf:3f57:fefe",
        "Teredo IPv6 address embedding server 65.54.227.120 and client 192.168.1.1",
    ),
    ("2001:1::1", "Port Control Protocol anycast (2001:1::1/128)"),
    ("2001:1::2", "TURN anycast (2001:1::2/128)"),
    ("2001:1::3", "DNS-SD service registration protocol anycast (2001:1::3/128)"),
    ("2001:2::1", "benchmarking (2001:2::/48)"),
    ("2001:3::1", "AMT (2001:3::/32)"),
    ("2001:4:112::1", "AS112 service (2001:4:112::/48)"),
    ("2001:10::1", "deprecated ORCHID (2001:10::/28)"),
    ("2001:20::1", "ORCHIDv2 (2001:20::/28)"),
    ("2001:30::1", "drone remote ID entity tags (2001:30::/28)"),
    ("2001:db8::1", "documentation (2001:db8::/32)"),
    ("2002:c0a8:101::1", "6to4 IPv6 address embedding 192.168.1.1"),
    ("2620:4f:8000::1", "AS112 direct delegation service (2620:4f:8000::/48)"),
    ("3fff::1", "documentation (3fff::/20)"),
    ("5f00::1", "SRv6 segment routing SIDs (5f00::/16)"),
    ("fc00::1", "unique local (fc00::/7)"),
    ("fd12:3456::1", "unique local (fc00::/7)"),
    ("fe80::1", "link-local (fe80::/10)"),
    ("fec0::1", "deprecated site-local (fec0::/10)"),
    ("ff02::1", "multicast (ff00::/8)"),
    ("1000::1", "reserved IPv6 space outside global unicast 2000::/3 (::/3)"),
    ("::1:0:0:1", "reserved IPv6 space outside global unicast 2000::/3 (::/3)"),
    ("4000::1", "reserved IPv6 space outside global unicast 2000::/3 (4000::/2)"),
    ("e000::1", "reserved IPv6 space outside global unicast 2000::/3 (8000::/1)"),
]


@pytest.mark.parametrize(("text", "name"), SPECIAL_CASES)
def test_special_purpose_names_the_most_specific_block(text: str, name: str) -> None:
    """special_purpose names the most specific block, and the IPv4 an IPv6 form embeds."""
    assert special_purpose(ip_address(text)) == name


def test_every_special_purpose_block_has_a_case() -> None:
    """Every row of the special-purpose table is the most specific match for some tested address."""

    def most_specific(text: str) -> object:
        address = ip_address(text)
        matches = [
            network
            for network, _ in SPECIAL_PURPOSE
            if network.version == address.version and address in network
        ]
        return max(matches, key=lambda network: network.prefixlen)

    covered = {most_specific(text) for text, _ in SPECIAL_CASES}
    assert {network for network, _ in SPECIAL_PURPOSE} <= covered


def test_teredo_names_the_obfuscated_client() -> None:
    """A Teredo address names its client after undoing the XOR obfuscation of the last 32 bits."""
    client = IPv4Address("10.0.0.23")
    obfuscated = int(client) ^ 0xFFFFFFFF
    address = IPv6Address((0x2001_0000_0808_0808 << 64) | obfuscated)
    assert special_purpose(address) == (
        "Teredo IPv6 address embedding server 8.8.8.8 and client 10.0.0.23"
    )


@pytest.mark.parametrize(
    "text", ["8.8.8.8", "1.1.1.1", "9.9.9.9", "2606:4700:4700::1111", "2a00:1450:4001::1"]
)
def test_ordinary_global_address_is_not_special(text: str) -> None:
    """An ordinary global unicast address belongs to no special-purpose block."""
    assert special_purpose(ip_address(text)) is None


def test_hostname_is_pinned_to_its_first_address() -> None:
    """A hostname resolves once and pins the first address, lowercased and without trailing dot."""
    resolver = RecordingResolver({"scanme.example.net": ["93.184.215.14", "2606:2800:220::1"]})
    target = parse_target("ScanMe.Example.NET.", resolver)
    assert resolver.calls == ["scanme.example.net"]
    assert target.typed == "ScanMe.Example.NET."
    assert target.hostname == "scanme.example.net"
    assert target.canonical == "93.184.215.14"
    assert target.resolved == (ip_address("93.184.215.14"), ip_address("2606:2800:220::1"))


def test_hostname_resolving_to_loopback_keeps_every_address_for_policy() -> None:
    """A name resolving to ordinary and loopback addresses records both, so policy can refuse it."""
    resolver = RecordingResolver({"sneaky.example.com": ["93.184.215.14", "127.0.0.1"]})
    target = parse_target("sneaky.example.com", resolver)
    assert target.address == ip_address("93.184.215.14")
    assert ip_address("127.0.0.1") in target.resolved
    assert [special_purpose(address) for address in target.resolved] == [
        None,
        "loopback (127.0.0.0/8)",
    ]


def test_resolved_addresses_are_deduplicated_and_zone_stripped() -> None:
    """Repeated answers appear once and a scoped answer loses its zone before it is parsed."""
    resolver = RecordingResolver(
        {"lab.example.com": ["fe80::1%eth0", "93.184.215.14", "fe80::1", "93.184.215.14"]}
    )
    target = parse_target("lab.example.com", resolver)
    assert target.canonical == "fe80::1"
    assert target.resolved == (ip_address("fe80::1"), ip_address("93.184.215.14"))


def test_punycode_hostname_is_accepted() -> None:
    """An internationalised name typed in its xn-- form is an ordinary hostname."""
    resolver = RecordingResolver({"xn--bcher-kva.example": ["93.184.215.14"]})
    assert parse_target("xn--bcher-kva.example", resolver).hostname == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("resolver", "text"),
    [
        (RecordingResolver(), "nowhere.example.com"),
        (TimingOutResolver(), "slow.example.com"),
        (RecordingResolver({"empty.example.com": []}), "empty.example.com"),
        (RecordingResolver({"junk.example.com": ["not-an-address"]}), "junk.example.com"),
    ],
    ids=["unknown", "timeout", "no-answers", "junk-answer"],
)
def test_unresolvable_hostname_is_refused(resolver: targets.Resolver, text: str) -> None:
    """A name that fails, times out, or yields no usable address is refused as unresolvable."""
    with pytest.raises(TargetRefused) as refused:
        parse_target(text, resolver)
    assert refused.value.code == RefusalCode.UNRESOLVABLE
    assert text in refused.value.reason


@pytest.mark.parametrize(
    "text", ["127.1", "0x7f.1", "2130706433", "0177.0.0.1", "1.2.3.4.", "example.123"]
)
def test_numeric_name_is_refused_before_resolution(text: str) -> None:
    """Names getaddrinfo would read as numbers are refused as noncanonical without a lookup."""
    resolver = RecordingResolver({text: ["127.0.0.1"], text.rstrip("."): ["127.0.0.1"]})
    with pytest.raises(TargetRefused) as refused:
        parse_target(text, resolver)
    assert refused.value.code == RefusalCode.NONCANONICAL
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("text", "meaning"),
    [("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1")],
)
def test_noncanonical_reason_says_what_the_form_means(text: str, meaning: str) -> None:
    """The refusal of a shorthand IPv4 form tells the user the address it stands for."""
    with pytest.raises(TargetRefused) as refused:
        parse_target(text, RecordingResolver())
    assert meaning in refused.value.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", IPv4Address("192.0.2.1")),
        ("2001:DB8::1", IPv6Address("2001:db8::1")),
        ("scanme.example.net", None),
    ],
)
def test_parse_literal_separates_addresses_from_names(
    text: str, expected: IPv4Address | IPv6Address | None
) -> None:
    """parse_literal returns the address for a literal and None for a syntactic hostname."""
    assert parse_literal(text) == expected


def test_parse_literal_refuses_bad_syntax() -> None:
    """parse_literal raises TargetRefused for refused syntax, like parse_target."""
    with pytest.raises(TargetRefused) as refused:
        parse_literal("127.1")
    assert refused.value.code == RefusalCode.NONCANONICAL


def test_target_defaults_resolved_to_its_address() -> None:
    """A Target built without resolved addresses records just its pinned address."""
    target = Target(typed="192.0.2.1", address=IPv4Address("192.0.2.1"))
    assert target.resolved == (IPv4Address("192.0.2.1"),)


def test_target_requires_the_pinned_address_among_resolved() -> None:
    """A Target whose pinned address is not among its resolved addresses cannot be built."""
    with pytest.raises(ValueError, match="pinned address"):
        Target(
            typed="x.example.com",
            address=IPv4Address("192.0.2.1"),
            hostname="x.example.com",
            resolved=(IPv4Address("192.0.2.2"),),
        )


def test_target_is_frozen() -> None:
    """A Target cannot be changed after it was parsed."""
    target = parse_target("192.0.2.1", RecordingResolver())
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.address = IPv4Address("127.0.0.1")  # type: ignore[misc]


def test_refusal_reason_is_sanitised_whoever_builds_it() -> None:
    """A reason given with control characters or excess length becomes one safe, short line."""
    refused = TargetRefused("bad\nthing\x00" + "x" * 500, code=RefusalCode.SPECIAL)
    assert refused.reason == str(refused)
    assert refused.reason.isprintable()
    assert len(refused.reason) <= 200
    assert refused.code == "special"


def test_refusal_never_echoes_much_user_input() -> None:
    """A refusal quotes at most a short excerpt of what the user typed."""
    name = "a" * 60 + ".b" * 90
    with pytest.raises(TargetRefused) as refused:
        parse_target(name, RecordingResolver())
    assert "a" * 49 not in refused.value.reason


@pytest.fixture
def fake_getaddrinfo(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, object]]]:
    """Replace socket.getaddrinfo with a recorder that answers from a fixed table."""
    calls: list[tuple[str, dict[str, object]]] = []

    def getaddrinfo(host: str, _port: object, *_args: object, **kwargs: object) -> list[object]:
        calls.append((host, kwargs))
        if host == "fails.example.com":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "idna.example.com":
            raise UnicodeError("label too long")
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET6, stream, tcp, "", ("2606:2800:220::1", 0, 0, 0)),
            (socket.AF_INET, stream, tcp, "", ("93.184.215.14", 0)),
            (socket.AF_INET6, stream, tcp, "", ("2606:2800:220::1", 0, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_system_resolver_returns_unique_stream_addresses_in_order(
    fake_getaddrinfo: list[tuple[str, dict[str, object]]],
) -> None:
    """The getaddrinfo resolver asks for stream sockets and returns unique addresses in order."""
    assert system_resolver()("www.example.com") == ["2606:2800:220::1", "93.184.215.14"]
    [(host, kwargs)] = fake_getaddrinfo
    assert host == "www.example.com"
    assert kwargs["type"] == socket.SOCK_STREAM


@pytest.mark.parametrize(
    ("host", "message"),
    [("fails.example.com", "not known"), ("idna.example.com", "label too long")],
)
@pytest.mark.usefixtures("fake_getaddrinfo")
def test_system_resolver_failure_is_an_oserror(host: str, message: str) -> None:
    """A failed lookup, including one the idna codec rejects, surfaces as OSError."""
    with pytest.raises(OSError, match=message):
        system_resolver()(host)


def test_system_resolver_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup that hangs past the timeout raises TimeoutError instead of blocking the caller."""
    release = threading.Event()

    def hanging_getaddrinfo(*_args: object, **_kwargs: object) -> list[object]:
        release.wait(5)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    try:
        with pytest.raises(TimeoutError):
            system_resolver(timeout=0.05)("slow.example.com")
    finally:
        release.set()


def _any_resolver() -> RecordingResolver:
    return RecordingResolver(
        {
            "scanme.example.net": ["93.184.215.14"],
            "a.b": ["2606:2800:220::1", "127.0.0.1"],
        }
    )


_CANONICAL = re.compile(r"[0-9a-f.:]+")
_ADDRESSISH = st.text(alphabet="0123456789abcdefxX.:-[]/%,ab ", max_size=50)


def _check_outcome(text: str) -> None:
    try:
        target = parse_target(text, _any_resolver())
    except TargetRefused as refused:
        _check_reason(refused.reason)
        return
    assert _CANONICAL.fullmatch(target.canonical)
    assert ip_address(target.canonical) == target.address
    assert str(ip_address(target.canonical)) == target.canonical


def _check_reason(reason: str) -> None:
    assert reason
    assert reason.isprintable()
    assert "\n" not in reason
    assert len(reason) <= 200


@given(st.text())
def test_any_text_gives_a_clean_target_or_a_refusal(text: str) -> None:
    """For any text, parse_target returns a canonical, round-tripping target or refuses cleanly."""
    _check_outcome(text)


@given(_ADDRESSISH)
def test_any_address_like_text_gives_a_clean_target_or_a_refusal(text: str) -> None:
    """Text built from address characters also yields a canonical target or a clean refusal."""
    _check_outcome(text)


@given(st.ip_addresses())
def test_every_address_round_trips(address: IPv4Address | IPv6Address) -> None:
    """Any IPv4 or IPv6 address, written canonically, parses back to the same address."""
    target = parse_target(str(address), RecordingResolver())
    assert target.address == address
    assert target.canonical == str(address)


@given(st.one_of(st.text(), _ADDRESSISH, st.text(min_size=200, max_size=400)))
def test_refusal_reasons_are_one_short_clean_line(text: str) -> None:
    """Every refusal reason is one printable line of at most 200 characters."""
    try:
        parse_target(text, _any_resolver())
    except TargetRefused as refused:
        _check_reason(refused.reason)
        _check_reason(str(refused))

"""Target parsing: what a user typed becomes exactly one pinned IP address, or a refusal.

The parser is purely syntactic plus one name resolution. It never decides whether an address
*may* be scanned: :func:`special_purpose` names IANA special-purpose space, and the policy
layer calls it (an admin's ``--lab`` allow entry may cover, say, 127.0.0.0/8). The only string
that may ever reach nmap is :attr:`Target.canonical`, produced by :mod:`ipaddress`.

This module imports only the standard library.
"""

from __future__ import annotations

import re
import socket
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Protocol

__all__ = [
    "SPECIAL_PURPOSE",
    "GetaddrinfoResolver",
    "RefusalCode",
    "Resolver",
    "Target",
    "TargetRefused",
    "parse_literal",
    "parse_target",
    "special_purpose",
    "system_resolver",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ACCEPTED = "send one IPv4/IPv6 address or hostname per request"
MAX_REASON_LENGTH = 200
# Enough of the input for the user to recognise it; more would let a chat message echo
# arbitrary text back under the bot's name.
MAX_ECHO_LENGTH = 48


class RefusalCode(StrEnum):
    """Short machine codes for why a target was refused."""

    EMPTY = "empty"
    TOO_LONG = "too_long"
    WHITESPACE = "whitespace"
    CONTROL = "control"
    NON_ASCII = "non_ascii"
    OPTION = "option"
    SHELL = "shell"
    CHARACTER = "character"
    URL = "url"
    RANGE = "range"
    LIST = "list"
    PORT = "port"
    BRACKET = "bracket"
    ZONE = "zone"
    NONCANONICAL = "noncanonical"
    BAD_IPV6 = "bad_ipv6"
    BAD_HOSTNAME = "bad_hostname"
    SINGLE_LABEL = "single_label"
    UNRESOLVABLE = "unresolvable"
    SPECIAL = "special"


# The name is part of the project's public vocabulary (STYLE.md): a refusal is an outcome
# the user is told about, not an error in the program.
class TargetRefused(Exception):
    """A target that may not be scanned; str(exc) / exc.reason is a one-line reason for the user."""

    reason: str
    code: str

    def __init__(self, reason: str, *, code: str) -> None:
        # Reasons may be built by other layers too: make "one safe line" a property of the
        # exception rather than a promise every caller has to keep.
        cleaned = "".join(ch if ch.isprintable() else "?" for ch in reason[: MAX_REASON_LENGTH + 1])
        if len(cleaned) > MAX_REASON_LENGTH:
            cleaned = cleaned[: MAX_REASON_LENGTH - 3] + "..."
        super().__init__(cleaned)
        self.reason = cleaned
        self.code = code


class Resolver(Protocol):
    """Turns a hostname into address strings; raises OSError / TimeoutError when it cannot."""

    def __call__(self, hostname: str) -> list[str]:
        """Return the addresses the hostname resolves to, in resolver order."""
        ...


@dataclass(frozen=True)
class GetaddrinfoResolver:
    """Resolves through the system's getaddrinfo, bounded by a timeout."""

    timeout: float = 3.0

    def __call__(self, hostname: str) -> list[str]:
        """Return unique TCP address strings for hostname in getaddrinfo order."""
        future: Future[list[str]] = Future()

        def lookup() -> None:
            try:
                infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as error:
                future.set_exception(error)
                return
            addresses: list[str] = []
            for family, _type, _proto, _canonname, sockaddr in infos:
                if family in (socket.AF_INET, socket.AF_INET6):
                    address = str(sockaddr[0])
                    if address not in addresses:
                        addresses.append(address)
            future.set_result(addresses)

        # getaddrinfo cannot be cancelled: a daemon thread lets a hung lookup be abandoned
        # without holding up the caller or interpreter exit.
        threading.Thread(target=lookup, name=f"resolve {hostname}", daemon=True).start()
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            raise TimeoutError(f"resolving {hostname} took longer than {self.timeout} s") from None
        except UnicodeError as error:
            # The idna codec rejects some names; callers only promise to handle OSError.
            raise OSError(str(error)) from error


def system_resolver(timeout: float = 3.0) -> Resolver:
    """Return a resolver that runs getaddrinfo in a worker thread with a timeout."""
    return GetaddrinfoResolver(timeout=timeout)


@dataclass(frozen=True)
class Target:
    """One scan target: what was typed and the single address it is pinned to.

    ``resolved`` holds every address considered: just ``(address,)`` for a literal, and every
    address a hostname resolved to (pinned to the first) for a name. The policy layer must
    refuse a hostname if *any* of them is special-purpose, not only the pinned one, so a name
    cannot smuggle loopback in behind an ordinary first answer.
    """

    typed: str
    address: IPAddress
    hostname: str | None = None
    resolved: tuple[IPAddress, ...] = field(default=())

    def __post_init__(self) -> None:
        """Default ``resolved`` to the pinned address and keep the two consistent."""
        if not self.resolved:
            object.__setattr__(self, "resolved", (self.address,))
        elif self.address not in self.resolved:
            raise ValueError("the pinned address must be one of the resolved addresses")

    @property
    def canonical(self) -> str:
        """Return str(address): the only string that may ever reach nmap."""
        return str(self.address)


# ---------------------------------------------------------------------------------------------
# Special-purpose space
# ---------------------------------------------------------------------------------------------

_IPV4_MAPPED = "IPv4-mapped IPv6 address"
_IPV4_COMPATIBLE = "deprecated IPv4-compatible IPv6 address"
_NAT64 = "NAT64 IPv6 address"
_NAT64_LOCAL = "local-use NAT64 IPv6 address"
_SIX_TO_FOUR = "6to4 IPv6 address"
_TEREDO = "Teredo IPv6 address"
_NOT_GLOBAL_UNICAST = "reserved IPv6 space outside global unicast 2000::/3"


def _networks(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(block), name) for block, name in rows)


# IANA IPv4 and IPv6 Special-Purpose Address Registries, plus multicast and the IPv6 space
# outside 2000::/3. Overlaps are deliberate: the most specific block names the address.
SPECIAL_PURPOSE: tuple[tuple[IPNetwork, str], ...] = _networks(
    ("0.0.0.0/8", "this network"),
    ("0.0.0.0/32", "this host on this network"),
    ("10.0.0.0/8", "private-use"),
    ("100.64.0.0/10", "carrier-grade NAT shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local and cloud metadata"),
    ("172.16.0.0/12", "private-use"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.0.0/29", "DS-Lite IPv4 service continuity prefix"),
    ("192.0.0.8/32", "IPv4 dummy address"),
    ("192.0.0.9/32", "Port Control Protocol anycast"),
    ("192.0.0.10/32", "TURN anycast"),
    ("192.0.0.170/32", "NAT64/DNS64 discovery"),
    ("192.0.0.171/32", "NAT64/DNS64 discovery"),
    ("192.0.2.0/24", "TEST-NET-1 documentation"),
    ("192.31.196.0/24", "AS112 service"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private-use"),
    ("192.175.48.0/24", "AS112 direct delegation service"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "TEST-NET-2 documentation"),
    ("203.0.113.0/24", "TEST-NET-3 documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
    ("::/3", _NOT_GLOBAL_UNICAST),
    ("4000::/2", _NOT_GLOBAL_UNICAST),
    ("8000::/1", _NOT_GLOBAL_UNICAST),
    ("::/128", "unspecified address"),
    ("::1/128", "loopback"),
    ("::/96", _IPV4_COMPATIBLE),
    ("::ffff:0:0/96", _IPV4_MAPPED),
    ("64:ff9b::/96", _NAT64),
    ("64:ff9b:1::/48", _NAT64_LOCAL),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001::/32", _TEREDO),
    ("2001:1::1/128", "Port Control Protocol anycast"),
    ("2001:1::2/128", "TURN anycast"),
    ("2001:1::3/128", "DNS-SD service registration protocol anycast"),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "AMT"),
    ("2001:4:112::/48", "AS112 service"),
    ("2001:10::/28", "deprecated ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:30::/28", "drone remote ID entity tags"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", _SIX_TO_FOUR),
    ("2620:4f:8000::/48", "AS112 direct delegation service"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment routing SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "deprecated site-local"),
    ("ff00::/8", "multicast"),
)


def _low32(address: IPv6Address) -> IPv4Address:
    return IPv4Address(int(address) & 0xFFFFFFFF)


def _teredo(address: IPv6Address) -> str:
    server, client = address.teredo or (IPv4Address(0), IPv4Address(0))
    return f"server {server} and client {client}"


# Blocks that carry an IPv4 address: the reason names it, because the IPv4 inside is what an
# attacker is after (::ffff:127.0.0.1 is loopback in disguise).
_EMBEDDED_IPV4: dict[str, Callable[[IPv6Address], str]] = {
    _IPV4_MAPPED: lambda address: str(_low32(address)),
    _IPV4_COMPATIBLE: lambda address: str(_low32(address)),
    _NAT64: lambda address: str(_low32(address)),
    # RFC 8215 lets an operator carve any prefix length out of 64:ff9b:1::/48; the /96 layout
    # (IPv4 in the last 32 bits) is the common one, so that is the reading we report.
    _NAT64_LOCAL: lambda address: str(_low32(address)),
    _SIX_TO_FOUR: lambda address: str(address.sixtofour),
    _TEREDO: _teredo,
}


def special_purpose(address: IPv4Address | IPv6Address) -> str | None:
    """Return the name of the special-purpose block holding the address, or None if ordinary.

    Ordinary blocks read like ``'loopback (127.0.0.0/8)'``, the most specific block winning.
    IPv6 blocks that embed an IPv4 address (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96,
    6to4 2002::/16, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, Teredo 2001::/32) are always
    special-purpose, whatever they embed, and say what they carry, e.g.
    ``'IPv4-mapped IPv6 address embedding 127.0.0.1'`` or, for Teredo, both the server and
    the de-obfuscated client address.
    """
    best: tuple[IPNetwork, str] | None = None
    for network, name in SPECIAL_PURPOSE:
        if network.version != address.version or address not in network:
            continue
        if best is None or network.prefixlen > best[0].prefixlen:
            best = (network, name)
    if best is None:
        return None
    network, name = best
    embedded = _EMBEDDED_IPV4.get(name)
    if embedded is not None and isinstance(address, IPv6Address):
        return f"{name} embedding {embedded(address)}"
    return f"{name} ({network})"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-")
_SHELL = frozenset(";|&$`()<>\\'\"*?{}!~#^")
_ECHO_SAFE = _ALLOWED | frozenset("/,%[]*_")
_NAMED_CHARACTERS = {
    " ": "a space",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a carriage return",
    "\x00": "a NUL byte",
}
_WILDCARD = re.compile(r"[0-9A-Fa-f.:]*\*[0-9A-Fa-f.:*]*")
_CIDR = re.compile(r"[0-9A-Fa-f.:]+/[0-9.]*")
_BRACKETED = re.compile(r"\[[0-9A-Fa-f.:]*\]")
_BRACKETED_PORT = re.compile(r"\[[^\[\]]*\]:[0-9A-Za-z]*")
_IPV4_RANGE = re.compile(r"[0-9.]*[0-9]-[0-9][0-9.]*")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_MAX_HOSTNAME = 253
_MAX_LABEL = 63


def _quote(text: str) -> str:
    """Return a short, quoted, chat-safe excerpt of user input."""
    excerpt = "".join(ch if ch in _ECHO_SAFE else "?" for ch in text[:MAX_ECHO_LENGTH])
    return f"'{excerpt}...'" if len(text) > MAX_ECHO_LENGTH else f"'{excerpt}'"


def _describe(character: str) -> str:
    """Name one character without reproducing it (it may be invisible or a control)."""
    if character in _NAMED_CHARACTERS:
        return _NAMED_CHARACTERS[character]
    code = f"U+{ord(character):04X}"
    name = unicodedata.name(character, "")
    return f"{code} {name}" if name and len(name) <= 40 else code


def _refuse(code: RefusalCode, reason: str) -> TargetRefused:
    return TargetRefused(reason, code=code)


def _inet_aton_reading(text: str) -> IPv4Address | None:
    """Return what the C library's inet_aton would make of text, or None if it rejects it.

    inet_aton (and so getaddrinfo) reads "127.1", "0x7f.1" and "0177.0.0.1" as 127.0.0.1; we
    refuse those forms, but telling the user what they would have meant is the kind reply.
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9A-Fa-f]*", part):
            values.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            values.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            values.append(int(part))
        else:
            return None
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (4 - len(leading)):
        return None
    number = last
    for position, value in enumerate(leading):
        number |= value << (24 - 8 * position)
    return IPv4Address(number)


def _check_characters(text: str, max_length: int) -> None:
    """Refuse the classes of input that are wrong whatever they were meant to be."""
    # Length first: everything after this is linear in a string we now know is short.
    if not text:
        raise _refuse(RefusalCode.EMPTY, f"no target given: {ACCEPTED}")
    if len(text) > max_length:
        raise _refuse(
            RefusalCode.TOO_LONG,
            f"target is too long ({len(text)} characters, at most {max_length}): {ACCEPTED}",
        )
    for character in text:
        if character.isspace():
            raise _refuse(
                RefusalCode.WHITESPACE,
                f"target contains {_describe(character)}: {ACCEPTED}, with nothing around it",
            )
    for character in text:
        if unicodedata.category(character) in ("Cc", "Cf"):
            raise _refuse(
                RefusalCode.CONTROL,
                f"target contains a control character ({_describe(character)}): {ACCEPTED}",
            )
    if not text.isascii():
        character = next(ch for ch in text if not ch.isascii())
        raise _refuse(
            RefusalCode.NON_ASCII,
            f"target contains a non-ASCII character ({_describe(character)}): use digits 0-9,"
            " and write international names in punycode (xn--...)",
        )
    if text.startswith("-"):
        raise _refuse(
            RefusalCode.OPTION,
            f"a target may not start with '-' (that is how command-line options begin): {ACCEPTED}",
        )


def _check_structure(text: str) -> None:
    """Refuse ranges, lists, ports, URLs, brackets, zones and stray characters."""
    if _WILDCARD.fullmatch(text):
        raise _refuse(RefusalCode.RANGE, f"wildcards and ranges are not accepted: {ACCEPTED}")
    shell = next((ch for ch in text if ch in _SHELL), None)
    if shell is not None:
        raise _refuse(
            RefusalCode.SHELL,
            f"target contains {shell!r}, which is not part of any address or hostname: {ACCEPTED}",
        )
    if "://" in text:
        raise _refuse(
            RefusalCode.URL, "send just the host, not a URL: drop the scheme (http://) and any path"
        )
    if "[" in text or "]" in text:
        if _BRACKETED_PORT.fullmatch(text):
            raise _refuse(
                RefusalCode.PORT,
                "ports cannot be chosen (the scan profile sets them): send the bare address",
            )
        if _BRACKETED.fullmatch(text) or text in ("[", "]"):
            raise _refuse(
                RefusalCode.BRACKET,
                "drop the brackets: send the bare IPv6 address, e.g. 2001:db8::1",
            )
    if "%" in text and ":" in text:
        raise _refuse(
            RefusalCode.ZONE,
            "IPv6 zone ids ('%eth0') are not accepted: send a global address without '%...'",
        )
    if "," in text:
        raise _refuse(RefusalCode.LIST, f"lists are not accepted: {ACCEPTED}")
    if "/" in text:
        if _CIDR.fullmatch(text):
            raise _refuse(RefusalCode.RANGE, f"CIDR blocks and ranges are not accepted: {ACCEPTED}")
        raise _refuse(RefusalCode.URL, "send just the host, not a URL or path")
    if "_" in text:
        raise _refuse(
            RefusalCode.BAD_HOSTNAME,
            "hostnames may not contain '_': only letters, digits, '-' and '.' are allowed",
        )
    stray = next((ch for ch in text if ch not in _ALLOWED), None)
    if stray is not None:
        raise _refuse(
            RefusalCode.CHARACTER,
            f"target contains {stray!r}: an address or hostname uses only letters, digits,"
            " '.', ':' and '-'",
        )


def _parse_colon_form(text: str) -> IPv6Address:
    """Parse text containing ':' as an IPv6 address, or say why it is not one."""
    try:
        return IPv6Address(text)
    except ValueError:
        pass
    if text.count(":") == 1 and not text.startswith(":"):
        raise _refuse(
            RefusalCode.PORT,
            "ports cannot be chosen (the scan profile sets them): send the address or"
            " hostname without ':port'",
        )
    if "-" in text:
        raise _refuse(RefusalCode.RANGE, f"ranges are not accepted: {ACCEPTED}")
    raise _refuse(RefusalCode.BAD_IPV6, f"{_quote(text)} is not a valid IPv6 address")


def _check_numeric_name(text: str) -> None:
    """Refuse names the C resolver would read as a number rather than look up."""
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    meaningful = [label for label in labels if label]
    if not meaningful:
        return
    all_numeric = all(_NUMERIC_LABEL.fullmatch(label) for label in meaningful)
    # RFC 3696: a top-level domain is never all-numeric, so such a "name" is always an
    # attempt at an address.
    numeric_tld = _NUMERIC_LABEL.fullmatch(meaningful[-1]) is not None
    if not (all_numeric or numeric_tld):
        return
    if text.endswith(".") and _is_strict_ipv4(name):
        raise _refuse(
            RefusalCode.NONCANONICAL, f"drop the trailing dot: send the address as {name}"
        )
    reading = _inet_aton_reading(name) if all_numeric else None
    if reading is not None:
        raise _refuse(
            RefusalCode.NONCANONICAL,
            f"{_quote(text)} is a non-canonical IPv4 form: send {reading} (four decimal numbers)",
        )
    if all_numeric:
        raise _refuse(
            RefusalCode.NONCANONICAL,
            f"{_quote(text)} is not a valid IPv4 address: write four decimal numbers 0-255"
            " without leading zeros, e.g. 192.0.2.10",
        )
    raise _refuse(
        RefusalCode.NONCANONICAL,
        f"{_quote(text)} is neither an IPv4 address nor a hostname: a top-level domain is"
        " never a number",
    )


def _is_strict_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def _check_hostname(text: str) -> str:
    """Return the normalised hostname (lowercase, no trailing dot) or refuse its syntax."""
    name = (text[:-1] if text.endswith(".") else text).lower()
    labels = name.split(".")
    if any(not label for label in labels):
        raise _refuse(
            RefusalCode.BAD_HOSTNAME,
            f"{_quote(text)} is not a valid hostname: it has an empty label",
        )
    for label in labels:
        if len(label) > _MAX_LABEL:
            raise _refuse(
                RefusalCode.BAD_HOSTNAME,
                f"{_quote(text)} has a label longer than {_MAX_LABEL} characters",
            )
        if not _LDH_LABEL.fullmatch(label):
            raise _refuse(
                RefusalCode.BAD_HOSTNAME,
                f"{_quote(text)} is not a valid hostname: a label may not start or end with '-'",
            )
    if len(name) > _MAX_HOSTNAME:
        raise _refuse(
            RefusalCode.BAD_HOSTNAME,
            f"hostname is longer than {_MAX_HOSTNAME} characters",
        )
    if len(labels) < 2:
        raise _refuse(
            RefusalCode.SINGLE_LABEL,
            f"{_quote(text)} is not a fully qualified name: add its domain"
            " (e.g. router.example.net) or send the IP address",
        )
    return name


def _classify(text: str, max_length: int) -> IPAddress | str:
    """Return the address for an IP literal or the normalised hostname for a name."""
    _check_characters(text, max_length)
    _check_structure(text)
    if ":" in text:
        return _parse_colon_form(text)
    if _is_strict_ipv4(text):
        return IPv4Address(text)
    if _IPV4_RANGE.fullmatch(text):
        raise _refuse(RefusalCode.RANGE, f"ranges are not accepted: {ACCEPTED}")
    _check_numeric_name(text)
    return _check_hostname(text)


def parse_literal(text: str, *, max_length: int = 253) -> IPv4Address | IPv6Address | None:
    """Return the address if text is an IP literal, None if it is a hostname; refuse bad syntax.

    Applies no special-purpose policy: ``parse_literal("127.0.0.1")`` returns the address.
    """
    parsed = _classify(text, max_length)
    return None if isinstance(parsed, str) else parsed


def parse_target(text: str, resolve: Resolver, *, max_length: int = 253) -> Target:
    """Parse one target and pin it to one address; raise TargetRefused with a clear reason.

    A literal is returned as is, even loopback or documentation space: whether special-purpose
    space may be scanned is the policy layer's call (an admin may allow a lab range), made
    with :func:`special_purpose`. A hostname is resolved exactly once and pinned to the first
    address; every address it resolved to is kept in ``Target.resolved`` so the policy layer
    can refuse the name if *any* of them is special-purpose.
    """
    parsed = _classify(text, max_length)
    if not isinstance(parsed, str):
        return Target(typed=text, address=parsed, hostname=None, resolved=(parsed,))
    hostname = parsed
    try:
        answers = resolve(hostname)
    except OSError:
        # TimeoutError is an OSError; the detail (resolver errno text) is for logs, not chat.
        raise _refuse(
            RefusalCode.UNRESOLVABLE, f"{_quote(hostname)} does not resolve to an address"
        ) from None
    resolved: list[IPAddress] = []
    for answer in answers:
        # getaddrinfo may scope link-local answers ("fe80::1%eth0"); the zone is local
        # plumbing, not part of the address the policy judges.
        try:
            address = ip_address(answer.partition("%")[0])
        except ValueError:
            raise _refuse(
                RefusalCode.UNRESOLVABLE,
                f"{_quote(hostname)} resolved to something that is not an IP address",
            ) from None
        if address not in resolved:
            resolved.append(address)
    if not resolved:
        raise _refuse(
            RefusalCode.UNRESOLVABLE, f"{_quote(hostname)} does not resolve to an address"
        )
    return Target(typed=text, address=resolved[0], hostname=hostname, resolved=tuple(resolved))

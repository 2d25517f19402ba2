"""Provider directory as data: whom to contact about findings, and a ready-to-send message.

``workers/data/providers.yaml`` is validated once (``ProviderDirectory.load``); ``advise`` picks
the provider by device banner, then reverse-DNS suffix, then address range, then the generic
default, and fills the provider's message template. Scanned text (products, banners, rDNS
names) only ever enters the message as a *value* of ``string.Template.safe_substitute`` after
being flattened to one bounded line; ``str.format`` is never used on data-file or scanned text
because format fields can reach attributes (``{0.__class__}``).
Imports ``workers.models`` and the data-file loader in ``workers.risk``.
"""

from __future__ import annotations

import ipaddress
import string
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator

from workers.datafile import PACKAGED_DATA, DataFileError, load_data_file
from workers.models import Contact, Finding, Guidance, Observation, Severity
from workers.risk import CaseInsensitivePattern

__all__ = [
    "MESSAGE_VARIABLES",
    "DefaultProvider",
    "Provider",
    "ProviderDirectory",
    "ProviderMatch",
    "ProvidersError",
    "one_line",
]

# What a message template may use. Unknown placeholders fail at load time, so a typo such as
# "$adress" is caught at start-up rather than pasted into an email to a provider.
MESSAGE_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "address": "the scanned IP address",
        "hostname": "its reverse-DNS name, or 'no reverse-DNS name'",
        "date": "when the scan ran, e.g. 2024-05-01 14:03 UTC",
        "provider": "the provider's name from this file",
        "findings": "one line per finding that needs attention: '- 23/tcp telnet (critical): ...'",
        "worst": "the worst finding, e.g. 'port 23/tcp (telnet)'",
        "worst_severity": "its severity, e.g. 'critical'",
        "count": "how many findings need attention",
    }
)
# Bounds for scanned text inside a message: one line each, and a message of bounded size even
# when a host answers on thousands of ports or a banner is 100 KB long.
_MAX_SERVICE = 40
_MAX_PRODUCT = 80
_MAX_TITLE = 120
_MAX_HOSTNAME = 253
_MAX_LISTED_FINDINGS = 20
_MAX_BANNER_TEXT = 1024


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class ProvidersError(DataFileError):
    """A provider directory is unreadable or invalid; the message names file, line and entry."""


def _check_template(text: str) -> str:
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError("invalid placeholder: write $name or ${name}, and $$ for a dollar sign")
    unknown = sorted(set(template.get_identifiers()) - MESSAGE_VARIABLES.keys())
    if unknown:
        known = ", ".join(f"${name}" for name in MESSAGE_VARIABLES)
        raise ValueError(f"unknown placeholder ${unknown[0]} (known: {known})")
    return text


MessageTemplate = Annotated[
    str, Field(min_length=1, max_length=5000), AfterValidator(_check_template)
]


def _parse_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        # pydantic turns ValueError (not TypeError) into a located validation error.
        raise ValueError(f"expected a CIDR string such as 198.51.100.0/24, got {value!r}")
    try:
        # strict: "198.51.100.7/24" is more likely a typo than a deliberate /24.
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid CIDR {value!r}: {exc}") from None


def _normalise_suffix(value: str) -> str:
    suffix = value.strip().lower().strip(".")
    labels = suffix.split(".")
    if not suffix or not all(label and len(label) <= 63 for label in labels):
        raise ValueError(f"not a DNS suffix: {value!r}")
    return suffix


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, PlainValidator(_parse_network)]
DnsSuffix = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_normalise_suffix)]
Asn = Annotated[int, Field(ge=1, le=4_294_967_295, strict=True)]


class ProviderMatch(_Schema):
    """How a provider is recognised: device banners, reverse-DNS suffixes, address ranges."""

    banners: tuple[CaseInsensitivePattern, ...] = ()
    rdns_suffixes: tuple[DnsSuffix, ...] = ()
    cidrs: tuple[Network, ...] = ()
    # Accepted so directory entries can record their networks now, but there is no ASN lookup
    # yet (that needs an IP-to-ASN source the workers do not have), so advise() ignores it.
    asns: tuple[Asn, ...] = ()


class DefaultProvider(_Schema):
    """The entry used when no provider matches: wording that suits any provider."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str = Field(min_length=1, max_length=120)
    contact: Contact = Field(default_factory=Contact)
    message: MessageTemplate
    all_clear: MessageTemplate
    advice: tuple[Annotated[str, Field(min_length=1, max_length=500)], ...] = ()


class Provider(_Schema):
    """One provider: how to recognise it, how to reach it, and what to tell it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str = Field(min_length=1, max_length=120)
    match: ProviderMatch
    contact: Contact = Field(default_factory=Contact)
    message: MessageTemplate
    all_clear: MessageTemplate | None = Field(
        default=None, description="used when nothing needs attention; the default's otherwise"
    )
    advice: tuple[Annotated[str, Field(min_length=1, max_length=500)], ...] = ()


MatchedBy = Literal["banner", "rdns", "cidr", "default"]


class ProviderDirectory(_Schema):
    """The validated provider directory; ``advise`` picks a provider and writes the message."""

    version: Literal[1]
    default: DefaultProvider
    providers: tuple[Provider, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None) -> ProviderDirectory:
        """Load and validate a directory file (the packaged ``providers.yaml`` by default)."""
        source = path or PACKAGED_DATA / "providers.yaml"
        return load_data_file(source, cls, error=ProvidersError, unique_ids_in=("providers",))

    def advise(
        self,
        *,
        address: str,
        hostname: str | None,
        observations: Sequence[Observation],
        findings: Sequence[Finding],
        when: datetime,
    ) -> Guidance:
        """Return whom to contact about the findings and a message ready to send them."""
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        provider, matched_by = self.identify(
            address=address, hostname=hostname, observations=observations
        )
        attention = sorted(
            (finding for finding in findings if finding.severity is not Severity.INFO),
            key=lambda finding: (-finding.severity.rank, finding.port, finding.protocol),
        )
        if attention:
            template = provider.message
        else:
            template = (provider.all_clear if isinstance(provider, Provider) else None) or (
                self.default.all_clear
            )
        values = _message_values(
            address=address,
            hostname=hostname,
            when=when,
            provider=provider.name,
            attention=attention,
        )
        return Guidance(
            provider=provider.name,
            matched_by=matched_by,
            contact=provider.contact,
            # safe_substitute: values are inserted once and never re-parsed, so "$address" or
            # "{0.__class__}" in a banner stays literal text.
            message=string.Template(template).safe_substitute(values).strip(),
            advice=list(provider.advice),
        )

    def identify(
        self, *, address: str, hostname: str | None, observations: Sequence[Observation]
    ) -> tuple[Provider | DefaultProvider, MatchedBy]:
        """Return the provider for a host and how it was recognised."""
        banners = [
            " ".join((item.product, item.version, item.extrainfo))[:_MAX_BANNER_TEXT]
            for item in observations
        ]
        for provider in self.providers:
            if any(pattern.search(text) for pattern in provider.match.banners for text in banners):
                return provider, "banner"

        by_rdns = self._by_rdns(hostname)
        if by_rdns is not None:
            return by_rdns, "rdns"
        by_cidr = self._by_cidr(address)
        if by_cidr is not None:
            return by_cidr, "cidr"
        return self.default, "default"

    def _by_rdns(self, hostname: str | None) -> Provider | None:
        if not hostname:
            return None
        name = hostname.strip().lower().rstrip(".")
        best: tuple[int, Provider] | None = None
        for provider in self.providers:
            for suffix in provider.match.rdns_suffixes:
                # Whole labels only: "evil-example.net" must not match "example.net".
                fits = name == suffix or name.endswith("." + suffix)
                if fits and (best is None or len(suffix) > best[0]):
                    best = (len(suffix), provider)
        return best[1] if best else None

    def _by_cidr(self, address: str) -> Provider | None:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return None
        best: tuple[int, Provider] | None = None
        for provider in self.providers:
            for network in provider.match.cidrs:
                # The most specific range wins: a reseller's /24 inside a carrier's /12.
                if ip in network and (best is None or network.prefixlen > best[0]):
                    best = (network.prefixlen, provider)
        return best[1] if best else None


def _message_values(
    *,
    address: str,
    hostname: str | None,
    when: datetime,
    provider: str,
    attention: Sequence[Finding],
) -> dict[str, str]:
    listed = [_finding_line(finding) for finding in attention[:_MAX_LISTED_FINDINGS]]
    if len(attention) > _MAX_LISTED_FINDINGS:
        listed.append(f"- ... and {len(attention) - _MAX_LISTED_FINDINGS} more")
    worst = attention[0] if attention else None
    return {
        "address": one_line(address, 64),
        "hostname": one_line(hostname, _MAX_HOSTNAME) if hostname else "no reverse-DNS name",
        "date": when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "provider": one_line(provider, _MAX_TITLE),
        "findings": "\n".join(listed) if listed else "- nothing that needs attention",
        "worst": _port_phrase(worst) if worst else "nothing that needs attention",
        "worst_severity": worst.severity.value if worst else "none",
        "count": str(len(attention)),
    }


def _port_phrase(finding: Finding) -> str:
    service = one_line(finding.service, _MAX_SERVICE)
    port = f"port {finding.port}/{finding.protocol}"
    return f"{port} ({service})" if service else port


def _finding_line(finding: Finding) -> str:
    service = one_line(finding.service, _MAX_SERVICE) or "unknown service"
    line = f"- {finding.port}/{finding.protocol} {service} ({finding.severity.value}): "
    line += one_line(finding.title, _MAX_TITLE)
    device = one_line(f"{finding.product} {finding.version}", _MAX_PRODUCT)
    return f"{line} [{device}]" if device else line


def one_line(text: str, limit: int) -> str:
    """Flatten scanned text to one line of at most ``limit`` characters, without control chars."""
    # Slice before scanning so a 100 KB banner costs no more than a short one; 4x leaves room
    # for the whitespace runs that collapse below.
    head = text[: limit * 4]
    # Category C covers control (Cc), format (Cf: bidi overrides that reorder what a reader
    # sees), surrogate, private-use and unassigned characters; none belong in a message.
    visible = "".join(" " if unicodedata.category(char)[0] == "C" else char for char in head)
    flat = " ".join(visible.split())
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat

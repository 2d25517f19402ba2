"""Risk rules as data: ``workers/data/rules.yaml`` validated once, then open ports → findings.

A rule names the nmap services it is about, the ports to fall back on when service detection
could not name the service, and plain-language text for a home user. This module also holds the
YAML data-file loader that ``workers.guidance`` reuses (line numbers in every error).
It imports only ``workers.models`` from the project.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from workers.datafile import PACKAGED_DATA, DataFileError, load_data_file
from workers.models import Finding, Observation, PortState, Severity

__all__ = [
    "CaseInsensitivePattern",
    "FallbackRule",
    "Rule",
    "RuleMatch",
    "RuleSet",
    "RulesError",
]

# Product regexes run against scanned text; bounding the text bounds the cost of any pattern.
_MAX_MATCHED_TEXT = 1024
# Names nmap gives when it could not identify the service ("tcpwrapped": the host closed the
# connection right after the handshake, which says nothing about what listens there).
_UNNAMED_SERVICES = frozenset({"", "unknown", "tcpwrapped"})
_OPEN_STATES = frozenset(state.value for state in PortState)


class RulesError(DataFileError):
    """A rules file is unreadable or invalid; the message names the file, line, rule and field."""


# --- reusable field types ----------------------------------------------------------------------


def _compile_pattern(value: object) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        # pydantic turns ValueError (not TypeError) into a located validation error.
        raise ValueError("a pattern must be a non-empty string")
    try:
        # Banners differ in case between firmware versions; patterns are case-insensitive.
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


CaseInsensitivePattern = Annotated[re.Pattern[str], PlainValidator(_compile_pattern)]


def _parse_port_range(value: object) -> tuple[int, int]:
    # bool is an int in Python; "ports: [yes]" is a mistake, not port 1.
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,5}\s*-\s*\d{1,5}\s*", value):
        low, high = (int(part) for part in value.split("-"))
    else:
        raise ValueError(f"expected a port number or a 'low-high' range, got {value!r}")
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"port range {low}-{high} must be ascending and within 0-65535")
    return low, high


PortRange = Annotated[tuple[int, int], PlainValidator(_parse_port_range)]
ServiceName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w./:+-]*$")]
Protocol = Literal["tcp", "udp", "sctp"]


class _Schema(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# --- the rules schema --------------------------------------------------------------------------


class RuleMatch(_Schema):
    """What a rule applies to: named services, optional product patterns, fallback ports."""

    services: tuple[ServiceName, ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[Protocol, ...] = ()
    products: tuple[CaseInsensitivePattern, ...] = ()

    @model_validator(mode="after")
    def _can_match(self) -> RuleMatch:
        if not (self.services or self.ports or self.products):
            raise ValueError("a rule needs at least one of services, ports or products")
        return self

    def matches_service(self, names: Iterable[str], observation: Observation) -> str | None:
        """Return which of ``names`` this rule matches for the observation, if any."""
        if not self._protocol_and_product_fit(observation):
            return None
        wanted = {service.lower() for service in self.services}
        for name in names:
            # A rule with products but no services is about the product on any named service.
            if name in wanted or (not wanted and self.products):
                return name
        return None

    def matches_port(self, observation: Observation) -> bool:
        """Return whether the observation's port and protocol fall within this rule's ports."""
        return self._protocol_and_product_fit(observation) and any(
            low <= observation.port <= high for low, high in self.ports
        )

    def _protocol_and_product_fit(self, observation: Observation) -> bool:
        if self.protocols and observation.protocol not in self.protocols:
            return False
        if not self.products:
            return True
        text = " ".join((observation.product, observation.version, observation.extrainfo))
        bounded = text[:_MAX_MATCHED_TEXT]
        return any(pattern.search(bounded) for pattern in self.products)


class FallbackRule(_Schema):
    """The finding for an open port no rule matches: an open port is always worth a question."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    severity: Severity
    title: str = Field(min_length=1, max_length=120)
    why: str = Field(min_length=1, max_length=2000)
    advice: str = Field(min_length=1, max_length=2000)


class Rule(FallbackRule):
    """One risk rule: which open ports it is about and what to tell the user."""

    match: RuleMatch


class RuleSet(_Schema):
    """The validated rules file; ``assess`` turns observations into findings."""

    version: Literal[1]
    fallback: FallbackRule
    rules: tuple[Rule, ...]

    @field_validator("rules")
    @classmethod
    def _has_rules(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        # Not min_length: that also fires when a rule is merely invalid, adding a misleading
        # "no rules" line to the real problem. This runs only once every rule validated.
        if not rules:
            raise ValueError("the file has no rules")
        return rules

    @classmethod
    def load(cls, path: Path | None = None) -> RuleSet:
        """Load and validate a rules file (the packaged ``workers/data/rules.yaml`` by default)."""
        source = path or PACKAGED_DATA / "rules.yaml"
        return load_data_file(source, cls, error=RulesError, unique_ids_in=("rules",))

    def assess(self, observations: Sequence[Observation]) -> list[Finding]:
        """Return one finding per open port, worst first, then by port and protocol."""
        findings: list[Finding] = []
        seen: set[tuple[int, str]] = set()
        for observation in observations:
            key = (observation.port, observation.protocol)
            if observation.state not in _OPEN_STATES or key in seen:
                continue
            seen.add(key)
            rule = self.rule_for(observation)
            findings.append(_finding(observation, rule or self.fallback))
        findings.sort(key=lambda finding: (-finding.severity.rank, finding.port, finding.protocol))
        return findings

    def rule_for(self, observation: Observation) -> Rule | None:
        """Return the rule for one observation, or None when only the fallback applies."""
        names, guessed = _service_names(observation)
        if names and not guessed:
            # nmap named the service: trust it over the port, so telnet on 2323 is telnet and a
            # web server moved to port 23 is not. A named service no rule knows gets the fallback.
            return self._by_service(names, observation)
        by_port = next((rule for rule in self.rules if rule.match.matches_port(observation)), None)
        if by_port is not None or not names:
            return by_port
        # "telnet?" is nmap's guess (usually the port's registered name): weaker than the port
        # rule above, but better than nothing when the port itself means nothing to us.
        return self._by_service(names, observation)

    def _by_service(self, names: tuple[str, ...], observation: Observation) -> Rule | None:
        # Names are tried most specific first ("ssl/http" before "http"), rules in file order,
        # so product-specific rules placed early in the file win over generic ones.
        for name in names:
            for rule in self.rules:
                if rule.match.matches_service((name,), observation):
                    return rule
        return None


def _service_names(observation: Observation) -> tuple[tuple[str, ...], bool]:
    """Return the service names to try (most specific first) and whether nmap only guessed."""
    name = observation.service.strip().lower()
    guessed = name.endswith("?")
    name = name.rstrip("?")
    tunnel = observation.tunnel.strip().lower()
    # nmap prints "ssl/http"; its XML splits that into tunnel="ssl" and name="http". Accept both.
    prefix, slash, base = name.partition("/")
    if slash and prefix in {"ssl", "tls"} and base:
        tunnel, name = tunnel or prefix, base
    if name in _UNNAMED_SERVICES:
        return (), guessed
    if tunnel:
        return (f"{tunnel}/{name}", name), guessed
    return (name,), guessed


def _finding(observation: Observation, rule: FallbackRule) -> Finding:
    return Finding(
        port=observation.port,
        protocol=observation.protocol,
        service=observation.service,
        product=observation.product,
        version=observation.version,
        severity=rule.severity,
        title=rule.title,
        why=rule.why,
        advice=rule.advice,
        rule=rule.id,
    )

"""Tests for workers.guidance: provider matching, message templates and hostile scanned text."""

from __future__ import annotations

import textwrap
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from workers.guidance import MESSAGE_VARIABLES, ProviderDirectory, ProvidersError, one_line
from workers.models import Finding, Guidance, Observation, Severity
from workers.risk import RuleSet

ADDRESS = "198.51.100.7"
WHEN = datetime(2024, 5, 1, 14, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def directory() -> ProviderDirectory:
    """The packaged provider directory, loaded once for the module."""
    return ProviderDirectory.load()


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    """The packaged rules, to turn observations into realistic findings."""
    return RuleSet.load()


def observe(port: int, protocol: str = "tcp", service: str = "", **fields: str) -> Observation:
    """Build an open-port observation with only the fields a test cares about."""
    return Observation.model_validate(
        {"port": port, "protocol": protocol, "service": service, **fields}
    )


def advise(
    directory: ProviderDirectory,
    rules: RuleSet,
    observations: list[Observation],
    *,
    address: str = ADDRESS,
    hostname: str | None = None,
) -> Guidance:
    """Run the rules over the observations and ask the directory for guidance."""
    return directory.advise(
        address=address,
        hostname=hostname,
        observations=observations,
        findings=rules.assess(observations),
        when=WHEN,
    )


# --- the packaged directory ----------------------------------------------------------------


@pytest.mark.parametrize(
    "observation",
    [
        observe(23, service="telnet", product="Lingo VoIP config telnetd"),
        observe(80, service="http", product="lingo adapter"),
        observe(80, service="http", product="SPA2102", version="LINGO 3.3.6"),
        observe(80, service="http", extrainfo="Lingo Telecom"),
    ],
)
def test_lingo_is_matched_by_banner(
    directory: ProviderDirectory, rules: RuleSet, observation: Observation
) -> None:
    """A "Lingo" banner in product, version or extra info picks Lingo, in any case."""
    guidance = advise(directory, rules, [observation])

    assert (guidance.provider, guidance.matched_by) == ("Lingo", "banner")


def test_lingo_guidance_carries_the_origin_story(
    directory: ProviderDirectory, rules: RuleSet
) -> None:
    """Lingo's guidance gives its support number and asks for the replacement adapter."""
    observations = [
        observe(23, service="telnet", product="Lingo VoIP config telnetd"),
        observe(5060, "udp", "sip"),
    ]

    guidance = advise(directory, rules, observations)

    assert guidance.contact.phone is not None
    assert "1-888-546-4699" in guidance.contact.phone
    assert "option 2" in guidance.contact.phone
    assert f"at {ADDRESS}" in guidance.message
    assert "found port 23/tcp (telnet) open, rated critical" in guidance.message
    assert "- 23/tcp telnet (critical): Telnet remote login is open" in guidance.message
    for fact in ("1024-1030", "5060-5065", "10000-20000", "June 2009", "Linksys SPA2102"):
        assert fact in guidance.message
    assert "5060/udp" not in guidance.message, "expected VoIP ports are not complaints"
    assert any("replacement device" in line for line in guidance.advice)
    assert any("option 2" in line for line in guidance.advice)


def test_default_provider_when_nothing_identifies_one(
    directory: ProviderDirectory, rules: RuleSet
) -> None:
    """Without a banner, rDNS or range match, the generic provider and wording are used."""
    guidance = advise(
        directory,
        rules,
        [observe(21, service="ftp", product="vsftpd"), observe(23, service="telnet")],
        hostname="host.example.net",
    )

    assert (guidance.provider, guidance.matched_by) == ("your internet or VoIP provider", "default")
    assert guidance.message.startswith("Hello,")
    assert f"at {ADDRESS}" in guidance.message
    assert "On 2024-05-01 14:03 UTC" in guidance.message
    assert "The most serious is port 23/tcp (telnet), rated critical" in guidance.message
    assert "- 21/tcp ftp (high): FTP file server is open [vsftpd]" in guidance.message
    assert guidance.advice


@pytest.mark.parametrize(
    "observations",
    [
        pytest.param([], id="nothing-open"),
        pytest.param(
            [observe(5060, "udp", "sip"), observe(16384, "udp"), observe(1025, "udp")],
            id="only-expected-voip",
        ),
    ],
)
def test_nothing_to_report_gives_an_all_clear(
    directory: ProviderDirectory, rules: RuleSet, observations: list[Observation]
) -> None:
    """With no findings, or only expected ones, the message says nothing needs attention."""
    guidance = advise(directory, rules, observations)

    assert guidance.matched_by == "default"
    assert "nothing that needs attention" in guidance.message
    assert ADDRESS in guidance.message
    assert "$" not in guidance.message


def test_when_is_rendered_in_utc(directory: ProviderDirectory) -> None:
    """A scan time in another zone is written as UTC in the message."""
    guidance = directory.advise(
        address=ADDRESS,
        hostname=None,
        observations=[],
        findings=[],
        when=datetime(2024, 5, 1, 16, 3, tzinfo=timezone(timedelta(hours=2))),
    )

    assert "2024-05-01 14:03 UTC" in guidance.message


def test_naive_when_is_refused(directory: ProviderDirectory) -> None:
    """A timestamp without a time zone is a programming error, not a guess."""
    with pytest.raises(ValueError, match="timezone-aware"):
        directory.advise(
            address=ADDRESS,
            hostname=None,
            observations=[],
            findings=[],
            when=datetime(2024, 5, 1, 14, 3),  # naive on purpose: the point of the test
        )


def test_explicit_path_loads_the_same_directory(directory: ProviderDirectory) -> None:
    """Loading the packaged file by path gives the same directory as the default."""
    packaged = Path(__file__).parents[1] / "workers" / "data" / "providers.yaml"

    assert ProviderDirectory.load(packaged) == directory


# --- hostile scanned text ----------------------------------------------------------------------

HOSTILE = [
    pytest.param('<a href="https://evil.example/">click</a>', id="html"),
    pytest.param("$address", id="template-variable"),
    pytest.param("${findings}", id="braced-template-variable"),
    pytest.param("$$worst", id="escaped-dollar"),
    pytest.param("{0.__class__}", id="format-attribute"),
    pytest.param("{address!r:>99999}", id="format-spec"),
    pytest.param("%(address)s", id="percent-format"),
    pytest.param("ok\r\n- 99/tcp fake (info): all fine\x00\x1b[31m", id="control-chars"),
    pytest.param("\u202eenilno\u2028next\u2029para\x85nel", id="bidi-and-separators"),
    pytest.param("A" * 100_000, id="100kb"),
    pytest.param("\x07" * 100_000, id="100kb-controls"),
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("field", ["product", "version", "service"])
def test_hostile_scanned_text_stays_inert_in_the_message(
    directory: ProviderDirectory, rules: RuleSet, hostile: str, field: str
) -> None:
    """Scanned text cannot add lines, expand placeholders or grow the message without bound."""
    observations = [
        observe(23, service="telnet"),
        observe(2323, **{"service": "ftp", field: hostile}),
    ]
    baseline = advise(
        directory, rules, [observe(23, service="telnet"), observe(2323, "tcp", "ftp")]
    )

    guidance = advise(directory, rules, observations)

    message = guidance.message
    assert len(message.splitlines()) == len(baseline.message.splitlines())
    assert message.count(ADDRESS) == baseline.message.count(ADDRESS)
    assert "<class" not in message
    assert len(message) <= len(baseline.message) + 200
    assert all(char == "\n" or unicodedata.category(char)[0] != "C" for char in message), (
        "no control or format characters survive"
    )
    for line in message.splitlines():
        assert len(line) < 600


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_hostname_stays_inert(tmp_path: Path, hostile: str) -> None:
    """A hostile reverse-DNS name is flattened and bounded like any scanned text."""
    path = tmp_path / "providers.yaml"
    path.write_text(
        custom_directory(message="host: $hostname\nat: $address\n$findings"), encoding="utf-8"
    )
    directory = ProviderDirectory.load(path)

    guidance = directory.advise(
        address="192.0.2.9",
        hostname=hostile,
        observations=[],
        findings=[finding(23, Severity.CRITICAL)],
        when=WHEN,
    )

    first, second, *rest = guidance.message.splitlines()
    assert first.startswith("host: ")
    assert len(first) <= len("host: ") + 253
    assert second == "at: 192.0.2.9"
    assert len(rest) == 1


def test_many_findings_are_capped(directory: ProviderDirectory) -> None:
    """A host with hundreds of open ports yields a bounded list with a count of the rest."""
    findings = [finding(port, Severity.LOW) for port in range(1000, 1250)]

    guidance = directory.advise(
        address=ADDRESS, hostname=None, observations=[], findings=findings, when=WHEN
    )

    bullets = [line for line in guidance.message.splitlines() if line.startswith("- ")]
    assert len(bullets) == 21
    assert bullets[-1] == "- ... and 230 more"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("Lingo VoIP config telnetd", 80, "Lingo VoIP config telnetd"),
        ("  two\n\tlines  ", 80, "two lines"),
        ("bell\x07ring", 80, "bell ring"),
        ("\u202eevil", 80, "evil"),
        ("x" * 100, 10, "xxxxxxx..."),
        ("", 10, ""),
        ("\x00\x01", 10, ""),
    ],
)
def test_one_line_flattens_and_bounds(text: str, limit: int, expected: str) -> None:
    """one_line drops control and format characters, collapses whitespace and caps length."""
    assert one_line(text, limit) == expected


# --- custom directories: rdns, cidr, banner order ----------------------------------------------


def finding(port: int, severity: Severity, service: str = "telnet") -> Finding:
    """Build a finding without running rules."""
    return Finding(
        port=port,
        protocol="tcp",
        service=service,
        severity=severity,
        title="Something is open",
        why="w",
        advice="a",
        rule="test",
    )


def custom_directory(message: str = "$provider: $worst at $address\n$findings") -> str:
    """Return a providers file with rdns, cidr, banner and asn-only entries."""
    indented = textwrap.indent(message, "      ")
    return textwrap.dedent(
        """\
        version: 1
        default:
          id: default
          name: your provider
          message: "default: $worst"
          all_clear: "all clear at $address"
        providers:
          - id: acme
            name: Acme DSL
            match:
              rdns_suffixes: [dsl.acme.example.]
              cidrs: [192.0.2.0/24]
            message: |
        {message}
          - id: metro
            name: Metro Fibre
            match:
              cidrs: [203.0.113.0/24, "2001:db8::/32"]
            message: "metro: $worst"
          - id: reseller
            name: Reseller Voice
            match:
              cidrs: [203.0.113.128/25]
              rdns_suffixes: [voice.dsl.acme.example]
            message: "reseller: $worst"
            all_clear: "reseller all clear"
          - id: gadget
            name: Gadget VoIP
            match:
              banners: ['gadget\\s+voip']
            message: "gadget: $worst"
          - id: asn-only
            name: ASN Only
            match:
              asns: [64496]
            message: "asn: $worst"
        """
    ).replace("{message}\n", indented + "\n")


@pytest.fixture
def custom(tmp_path: Path) -> ProviderDirectory:
    """A directory file written to tmp_path with rdns, cidr, banner and asn entries."""
    path = tmp_path / "providers.yaml"
    path.write_text(custom_directory(), encoding="utf-8")
    return ProviderDirectory.load(path)


@pytest.mark.parametrize(
    ("address", "hostname", "product", "expected"),
    [
        pytest.param(ADDRESS, "host-7.dsl.acme.example", "", ("Acme DSL", "rdns"), id="rdns"),
        pytest.param(ADDRESS, "HOST-7.DSL.ACME.EXAMPLE.", "", ("Acme DSL", "rdns"), id="rdns-case"),
        pytest.param(ADDRESS, "dsl.acme.example", "", ("Acme DSL", "rdns"), id="rdns-exact"),
        pytest.param(
            ADDRESS, "a.voice.dsl.acme.example", "", ("Reseller Voice", "rdns"), id="longest-suffix"
        ),
        pytest.param(
            ADDRESS, "evil-dsl.acme.example", "", ("your provider", "default"), id="whole-labels"
        ),
        pytest.param(
            ADDRESS, "dsl.acme.example.evil.net", "", ("your provider", "default"), id="not-suffix"
        ),
        pytest.param("203.0.113.5", None, "", ("Metro Fibre", "cidr"), id="cidr"),
        pytest.param("203.0.113.200", None, "", ("Reseller Voice", "cidr"), id="narrowest-cidr"),
        pytest.param("2001:db8::7", None, "", ("Metro Fibre", "cidr"), id="cidr-ipv6"),
        pytest.param("198.18.0.1", None, "", ("your provider", "default"), id="no-cidr"),
        pytest.param("not-an-ip", None, "", ("your provider", "default"), id="bad-address"),
        pytest.param(
            "203.0.113.5", "x.dsl.acme.example", "", ("Acme DSL", "rdns"), id="rdns-before-cidr"
        ),
        pytest.param(
            "192.0.2.9", "x.voice.dsl.acme.example", "", ("Reseller Voice", "rdns"), id="rdns-wins"
        ),
        pytest.param(
            "203.0.113.5",
            "x.dsl.acme.example",
            "Gadget  VoIP box",
            ("Gadget VoIP", "banner"),
            id="banner-first",
        ),
        pytest.param(
            ADDRESS, None, "AS64496 router", ("your provider", "default"), id="asn-unused"
        ),
    ],
)
def test_custom_directory_matching_order(
    custom: ProviderDirectory,
    address: str,
    hostname: str | None,
    product: str,
    expected: tuple[str, str],
) -> None:
    """Providers are matched by banner, then rDNS suffix, then the narrowest CIDR, then default."""
    guidance = custom.advise(
        address=address,
        hostname=hostname,
        observations=[observe(23, service="telnet", product=product)],
        findings=[finding(23, Severity.CRITICAL)],
        when=WHEN,
    )

    assert (guidance.provider, guidance.matched_by) == expected


def test_custom_message_is_filled(custom: ProviderDirectory) -> None:
    """A provider's template is filled with the address, worst finding and finding lines."""
    guidance = custom.advise(
        address="192.0.2.9",
        hostname=None,
        observations=[],
        findings=[finding(23, Severity.CRITICAL), finding(21, Severity.HIGH, "ftp")],
        when=WHEN,
    )

    assert guidance.message == (
        "Acme DSL: port 23/tcp (telnet) at 192.0.2.9\n"
        "- 23/tcp telnet (critical): Something is open\n"
        "- 21/tcp ftp (high): Something is open"
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [("203.0.113.200", "reseller all clear"), ("203.0.113.5", "all clear at 203.0.113.5")],
)
def test_all_clear_falls_back_to_the_default_wording(
    custom: ProviderDirectory, address: str, expected: str
) -> None:
    """A provider without its own all-clear text borrows the default's."""
    guidance = custom.advise(
        address=address, hostname=None, observations=[], findings=[], when=WHEN
    )

    assert guidance.message == expected


def test_every_documented_variable_is_filled(tmp_path: Path) -> None:
    """Every placeholder a template may use is replaced with a value."""
    path = tmp_path / "providers.yaml"
    template = " ".join(f"${name}" for name in MESSAGE_VARIABLES)
    path.write_text(custom_directory(message=template), encoding="utf-8")

    guidance = ProviderDirectory.load(path).advise(
        address="192.0.2.9",
        hostname="h.example",
        observations=[],
        findings=[finding(23, Severity.CRITICAL)],
        when=WHEN,
    )

    assert "$" not in guidance.message
    assert "h.example" in guidance.message


# --- bad directory files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'message: "metro: $worst"',
            'message: "metro: $adress"',
            [":20:", "providers[1] (id 'metro')", "field message", "unknown placeholder $adress"],
            id="unknown-placeholder",
        ),
        pytest.param(
            'message: "metro: $worst"',
            'message: "costs $5"',
            [":20:", "field message", "invalid placeholder"],
            id="invalid-placeholder",
        ),
        pytest.param(
            "cidrs: [192.0.2.0/24]",
            "cidrs: [192.0.2.7/24]",
            [":12:", "providers[0] (id 'acme')", "field match.cidrs[0]", "host bits"],
            id="cidr-host-bits",
        ),
        pytest.param(
            "banners: ['gadget\\s+voip']",
            "banners: ['gadget(']",
            [":31:", "field match.banners[0]", "invalid regular expression"],
            id="bad-banner-regex",
        ),
        pytest.param(
            "asns: [64496]",
            "asns: [AS64496]",
            [":36:", "providers[4] (id 'asn-only')", "field match.asns[0]"],
            id="bad-asn",
        ),
        pytest.param(
            "name: Metro Fibre",
            "name: Metro Fibre\n    website: x",
            [":18:", "providers[1] (id 'metro')", "field website", "Extra inputs"],
            id="unknown-key",
        ),
        pytest.param(
            "  - id: reseller",
            "  - id: metro",
            [":21:", "providers[2] (id 'metro')", "already used by providers[1]"],
            id="duplicate-id",
        ),
        pytest.param(
            '  all_clear: "all clear at $address"\n',
            "",
            [":3:", "field default.all_clear", "Field required"],
            id="default-without-all-clear",
        ),
        pytest.param(
            "rdns_suffixes: [voice.dsl.acme.example]",
            "rdns_suffixes: [voice..example]",
            [":25:", "field match.rdns_suffixes[0]", "not a DNS suffix"],
            id="bad-suffix",
        ),
        pytest.param(
            "    name: Metro Fibre\n",
            "    name: Metro Fibre\n  contact: {fax: 1}\n",
            ["malformed YAML"],
            id="malformed-yaml",
        ),
    ],
)
def test_bad_directory_fails_fast(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    """A bad providers file fails with a ProvidersError naming the file, line, entry and field."""
    text = custom_directory()
    assert old in text
    path = tmp_path / "providers.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")

    with pytest.raises(ProvidersError) as caught:
        ProviderDirectory.load(path)

    message = str(caught.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message

"""Tests for workers.risk: the packaged rules, matching order, and fail-fast rules files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workers.models import Observation, Risk, Severity, overall_risk
from workers.risk import RulesError, RuleSet


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    """The packaged rules file, loaded once for the module."""
    return RuleSet.load()


def observe(port: int, protocol: str = "tcp", service: str = "", **fields: str) -> Observation:
    """Build an open-port observation with only the fields a test cares about."""
    return Observation.model_validate(
        {"port": port, "protocol": protocol, "service": service, **fields}
    )


# One or more observations per packaged rule; test_every_rule_has_a_case keeps this complete.
RULE_CASES: list[tuple[str, Observation]] = [
    ("telnet", observe(23, service="telnet")),
    ("telnet", observe(23, service="telnet", product="Lingo VoIP config telnetd")),
    ("ftp", observe(21, service="ftp")),
    ("ftps", observe(990, service="ftps")),
    ("ftps", observe(2121, service="ftp", tunnel="ssl")),
    ("tftp", observe(69, "udp", "tftp")),
    ("ssh", observe(22, service="ssh")),
    ("smtp", observe(25, service="smtp")),
    ("smtp", observe(587, service="submission")),
    ("pop3", observe(110, service="pop3")),
    ("imap", observe(143, service="imap")),
    ("nntp", observe(119, service="nntp")),
    ("mail-tls", observe(993, service="imap", tunnel="ssl")),
    ("mail-tls", observe(995, service="pop3s")),
    ("smb", observe(445, service="microsoft-ds")),
    ("smb", observe(139, service="netbios-ssn")),
    ("smb", observe(137, "udp", "netbios-ns")),
    ("rdp", observe(3389, service="ms-wbt-server")),
    ("vnc", observe(5900, service="vnc")),
    ("tr-069-product", observe(7547, service="http", product="Huawei TR-069 remote access")),
    ("tr-069", observe(7547, service="cwmp")),
    ("tr-069", observe(7547, service="unknown")),
    ("upnp", observe(1900, "udp", "upnp")),
    ("upnp", observe(49152, service="upnp")),
    ("snmp", observe(161, "udp", "snmp")),
    ("rpc", observe(111, service="rpcbind")),
    ("rpc", observe(135, service="msrpc")),
    ("pptp", observe(1723, service="pptp")),
    ("dns", observe(53, "udp", "domain")),
    (
        "voip-adapter-web",
        observe(80, service="http", product="Linksys SPA2102 VoIP phone http config"),
    ),
    ("voip-adapter-web", observe(80, service="http", product="Obihai OBi202 VoIP adapter")),
    ("sip", observe(5060, "udp", "sip")),
    ("sip", observe(5061, service="sip-tls")),
    ("sip", observe(5065, "udp")),
    ("rtp", observe(16384, "udp")),
    ("rtp", observe(10000, "udp", "rtp")),
    ("voip-high-ports", observe(1025, "udp")),
    ("voip-high-ports", observe(1030, "udp", "unknown")),
    ("mysql", observe(3306, service="mysql")),
    ("postgresql", observe(5432, service="postgresql")),
    ("redis", observe(6379, service="redis")),
    ("mongodb", observe(27017, service="mongodb")),
    ("mongodb", observe(27017, service="mongod")),
    ("memcached", observe(11211, service="memcached")),
    ("memcached", observe(11211, "udp", "memcache")),
    (
        "elasticsearch-product",
        observe(9200, service="http", product="Elasticsearch REST API", version="7.17.1"),
    ),
    ("elasticsearch", observe(9200, service="wap-wsp")),
    ("elasticsearch", observe(9200, service="elasticsearch")),
    ("https-admin", observe(443, service="https")),
    ("https-admin", observe(8443, service="http", tunnel="ssl")),
    ("https-admin", observe(443, service="ssl/http")),
    ("http-admin", observe(80, service="http")),
    ("http-admin", observe(8080, service="http-proxy")),
    ("rtsp", observe(554, service="rtsp")),
]


@pytest.mark.parametrize(("rule_id", "observation"), RULE_CASES)
def test_packaged_rule_matches(rules: RuleSet, rule_id: str, observation: Observation) -> None:
    """Each packaged rule matches the observations it is written for, and the finding says so."""
    (finding,) = rules.assess([observation])

    assert finding.rule == rule_id
    rule = next(rule for rule in rules.rules if rule.id == rule_id)
    assert (finding.severity, finding.title, finding.why, finding.advice) == (
        rule.severity,
        rule.title,
        rule.why,
        rule.advice,
    )


def test_every_rule_has_a_case(rules: RuleSet) -> None:
    """Every rule in the packaged file is exercised by RULE_CASES (a new rule needs a case)."""
    assert {rule.id for rule in rules.rules} == {rule_id for rule_id, _ in RULE_CASES}


def test_packaged_rules_cover_the_origin_story(rules: RuleSet) -> None:
    """The ports the origin story worries about carry the severities the design asks for."""
    severities = {rule.id: rule.severity for rule in rules.rules}

    assert severities["telnet"] is Severity.CRITICAL
    assert severities["ftp"] is Severity.HIGH
    for rule_id in ("ssh", "nntp", "smtp", "pop3", "imap"):
        assert severities[rule_id] is Severity.MEDIUM
    for rule_id in ("sip", "rtp", "voip-high-ports"):
        assert severities[rule_id] is Severity.INFO


@pytest.mark.parametrize("port", [23, 2323, 8023, 10023])
def test_telnet_is_critical_on_any_port(rules: RuleSet, port: int) -> None:
    """Telnet found by service detection is critical wherever it listens, not only on 23."""
    (finding,) = rules.assess([observe(port, service="telnet")])

    assert (finding.rule, finding.severity) == ("telnet", Severity.CRITICAL)


@pytest.mark.parametrize("service", ["", "unknown", "tcpwrapped", "UNKNOWN"])
def test_unnamed_service_falls_back_to_the_port(rules: RuleSet, service: str) -> None:
    """When nmap cannot name the service, the port and protocol decide the rule."""
    (finding,) = rules.assess([observe(23, service=service)])

    assert finding.rule == "telnet"
    assert finding.service == service


@pytest.mark.parametrize(
    ("port", "service", "expected"),
    [
        (23, "telnet?", "telnet"),
        (2323, "telnet?", "telnet"),
        (23, "http?", "telnet"),
        (6379, "redis?", "redis"),
        (4444, "unknown?", "open-port"),
        (4444, "krb524?", "open-port"),
    ],
)
def test_guessed_service_comes_after_the_port(
    rules: RuleSet, port: int, service: str, expected: str
) -> None:
    """A guessed name ("telnet?") yields to a port rule, but is still used when the port is not."""
    (finding,) = rules.assess([observe(port, service=service)])

    assert finding.rule == expected


@pytest.mark.parametrize(("port", "service"), [(23, "irc"), (21, "http"), (22, "smtp")])
def test_named_service_beats_the_port(rules: RuleSet, port: int, service: str) -> None:
    """A service nmap named is trusted over the port's usual meaning."""
    (finding,) = rules.assess([observe(port, service=service)])

    assert finding.rule != {23: "telnet", 21: "ftp", 22: "ssh"}[port]


@pytest.mark.parametrize(
    "observation",
    [
        observe(31337, service="elite"),
        observe(4444),
        observe(10000, "tcp"),
        observe(5060, "sctp", "unknown"),
    ],
)
def test_unmatched_open_port_is_worth_a_question(rules: RuleSet, observation: Observation) -> None:
    """An open port no rule matches (including a wrong protocol) still gets a low finding."""
    (finding,) = rules.assess([observation])

    assert (finding.rule, finding.severity) == ("open-port", Severity.LOW)
    assert finding.title == "Open port worth a question"


def test_voip_services_do_not_raise_overall_risk(rules: RuleSet) -> None:
    """SIP, RTP and the VoIP high ports are info findings that leave the overall risk at none."""
    voip = [observe(5060, "udp", "sip"), observe(16384, "udp"), observe(1024, "udp")]

    findings = rules.assess(voip)

    assert [finding.severity for finding in findings] == [Severity.INFO] * 3
    assert overall_risk(findings) is Risk.NONE
    assert overall_risk(rules.assess([*voip, observe(23, service="telnet")])) is Risk.CRITICAL


def test_findings_are_sorted_worst_first_then_by_port(rules: RuleSet) -> None:
    """Findings come worst first, and by port and protocol within a severity."""
    findings = rules.assess(
        [
            observe(5060, "udp", "sip"),
            observe(4444),
            observe(22, service="ssh"),
            observe(8023, service="telnet"),
            observe(23, service="telnet"),
            observe(21, service="ftp"),
        ]
    )

    assert [(finding.port, finding.severity.value) for finding in findings] == [
        (23, "critical"),
        (8023, "critical"),
        (21, "high"),
        (22, "medium"),
        (4444, "low"),
        (5060, "info"),
    ]


def test_only_open_ports_count_and_each_once(rules: RuleSet) -> None:
    """Closed or filtered ports are ignored and a repeated port/protocol yields one finding."""
    findings = rules.assess(
        [
            observe(23, service="telnet"),
            observe(23, service="telnet"),
            observe(23, "udp", state="open|filtered"),
            observe(21, service="ftp", state="closed"),
            observe(22, service="ssh", state="filtered"),
        ]
    )

    assert [(finding.port, finding.protocol) for finding in findings] == [(23, "tcp"), (23, "udp")]


def test_finding_carries_product_and_version(rules: RuleSet) -> None:
    """A finding's product and version come from the observation, with the rule id."""
    (finding,) = rules.assess(
        [observe(23, service="telnet", product="Lingo VoIP config telnetd", version="1.2")]
    )

    assert (finding.product, finding.version, finding.rule) == (
        "Lingo VoIP config telnetd",
        "1.2",
        "telnet",
    )


def test_no_observations_no_findings(rules: RuleSet) -> None:
    """Nothing open means no findings and no risk."""
    assert rules.assess([]) == []
    assert overall_risk([]) is Risk.NONE


def test_explicit_path_loads_the_same_rules(rules: RuleSet) -> None:
    """Loading the packaged file by path gives the same rules as the default."""
    packaged = Path(__file__).parents[1] / "workers" / "data" / "rules.yaml"

    assert RuleSet.load(packaged) == rules


def test_product_rules_are_case_insensitive(tmp_path: Path) -> None:
    """Product patterns match regardless of case, and only alongside a listed service."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        VALID_RULES
        + textwrap.indent(
            textwrap.dedent(
                """\
                - id: camera
                  severity: high
                  title: camera
                  why: w
                  advice: a
                  match: {services: [http], products: ['hikvision']}
                """
            ),
            "  ",
        ),
        encoding="utf-8",
    )
    rules = RuleSet.load(path)

    assert rules.assess([observe(80, service="http", product="HIKVISION web")])[0].rule == "camera"
    assert rules.assess([observe(80, service="http", product="nginx")])[0].rule == "open-port"
    assert rules.assess([observe(80, service="rtsp", product="Hikvision")])[0].rule == "open-port"


# --- bad rules files ---------------------------------------------------------------------------

VALID_RULES = textwrap.dedent(
    """\
    version: 1
    fallback:
      id: open-port
      severity: low
      title: Open port worth a question
      why: w
      advice: a
    rules:
      - id: telnet
        severity: critical
        title: Telnet
        why: w
        advice: a
        match:
          services: [telnet]
          ports: [23]
    """
)


def test_valid_minimal_rules_file_loads(tmp_path: Path) -> None:
    """The minimal file the bad-file cases start from is itself valid."""
    path = tmp_path / "rules.yaml"
    path.write_text(VALID_RULES, encoding="utf-8")

    assert [rule.id for rule in RuleSet.load(path).rules] == ["telnet"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "services: [telnet]",
            "services: [telnet",
            [":16:", "malformed YAML"],
            id="malformed-yaml",
        ),
        pytest.param(
            "severity: critical",
            "severity: scary",
            [":10:", "rules[0] (id 'telnet')", "field severity", "'critical'"],
            id="unknown-severity",
        ),
        pytest.param(
            "    title: Telnet\n",
            "",
            [":9:", "rules[0] (id 'telnet')", "field title", "Field required"],
            id="missing-field",
        ),
        pytest.param(
            "    advice: a\n    match:",
            "    advice: a\n    colour: red\n    match:",
            [":14:", "rules[0] (id 'telnet')", "field colour", "Extra inputs"],
            id="unknown-key",
        ),
        pytest.param(
            "      ports: [23]",
            "      ports: [23]\n      hosts: [x]",
            [":17:", "field match.hosts", "Extra inputs"],
            id="unknown-match-key",
        ),
        pytest.param(
            "ports: [23]",
            'ports: [23, "30-20"]',
            [":16:", "field match.ports[1]", "30-20"],
            id="backwards-port-range",
        ),
        pytest.param(
            "ports: [23]",
            "ports: [70000]",
            [":16:", "field match.ports[0]", "0-65535"],
            id="port-out-of-range",
        ),
        pytest.param(
            "      ports: [23]",
            "      ports: [23]\n      products: ['(']",
            [":17:", "field match.products[0]", "invalid regular expression"],
            id="bad-regex",
        ),
        pytest.param(
            "      services: [telnet]\n      ports: [23]\n",
            "      protocols: [tcp]\n",
            [":15:", "field match", "at least one of services, ports or products"],
            id="rule-that-cannot-match",
        ),
        pytest.param(
            "      ports: [23]",
            "      ports: [23]\n      protocols: [icmp]",
            [":17:", "field match.protocols[0]", "'tcp'"],
            id="unknown-protocol",
        ),
        pytest.param(
            "version: 1",
            "version: 2",
            [":1:", "field version"],
            id="unknown-version",
        ),
        pytest.param(
            "rules:\n" + VALID_RULES.split("rules:\n", 1)[1],
            "rules: []\n",
            [":8:", "field rules", "the file has no rules"],
            id="no-rules",
        ),
        pytest.param(
            "  severity: low\n",
            "  severity: low\n  severity: info\n",
            [":5:", "key 'severity' appears twice"],
            id="duplicate-key",
        ),
        pytest.param(
            "  why: w\n  advice: a\nrules",
            "  why: &why w\n  advice: *why\nrules",
            ["anchors and aliases"],
            id="alias",
        ),
    ],
)
def test_bad_rules_file_names_line_rule_and_field(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    """A bad rules file fails with one RulesError naming the file, the line and the problem."""
    assert old in VALID_RULES
    path = tmp_path / "rules.yaml"
    path.write_text(VALID_RULES.replace(old, new, 1), encoding="utf-8")

    with pytest.raises(RulesError) as caught:
        RuleSet.load(path)

    message = str(caught.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message


def test_duplicate_rule_ids_fail_at_the_repeat(tmp_path: Path) -> None:
    """Two rules with the same id fail, naming the line of the repeated id and the first use."""
    repeat = VALID_RULES.split("rules:\n", 1)[1]
    path = tmp_path / "rules.yaml"
    path.write_text(VALID_RULES + repeat, encoding="utf-8")

    with pytest.raises(RulesError, match=r"rules\.yaml:17: rules\[1\] \(id 'telnet'\)") as caught:
        RuleSet.load(path)

    assert "already used by rules[0]" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", "the file is empty", id="empty"),
        pytest.param(b"# only a comment\n", "the file is empty", id="comment-only"),
        pytest.param(b"- 1\n- 2\n", ":1: top level", id="not-a-mapping"),
        pytest.param(b"version: 1\n\xff\xfe\n", "not UTF-8", id="not-utf8"),
        pytest.param(b"version: 1\n\tfallback: x\n", ":2:", id="tab-indent"),
    ],
)
def test_unusable_rules_file_fails_fast(tmp_path: Path, content: bytes, expected: str) -> None:
    """Empty, non-mapping or undecodable files fail with a message naming the file."""
    path = tmp_path / "rules.yaml"
    path.write_bytes(content)

    with pytest.raises(RulesError, match=str(path)) as caught:
        RuleSet.load(path)

    assert expected in str(caught.value)


def test_missing_rules_file_fails_fast(tmp_path: Path) -> None:
    """A path that does not exist fails with a RulesError naming it."""
    path = tmp_path / "nope.yaml"

    with pytest.raises(RulesError, match="cannot read the file"):
        RuleSet.load(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes in one file are all listed in the one error, each with its line."""
    path = tmp_path / "rules.yaml"
    broken = VALID_RULES.replace("severity: critical", "severity: scary").replace(
        "ports: [23]", "ports: [-1]"
    )
    path.write_text(broken, encoding="utf-8")

    with pytest.raises(RulesError) as caught:
        RuleSet.load(path)

    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}:") for line in lines)

"""Tests for workers.nmap_scan: profiles, the nmap argv, XML parsing and the nmap process itself.

XML samples in tests/data/nmap/ were recorded by running nmap 7.93 against loopback lab services
(see tests/data/nmap/README.md); two are hand-edited variants of a recording. Fault tests run
small stand-in scripts from tmp_path as ``binary=``; one test runs the real nmap on loopback.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import stat
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bot.lab import voip_adapter
from workers.datafile import DataFileError
from workers.nmap_scan import (
    JOB_GRACE_S,
    PROCESS_GRACE_S,
    NmapFailed,
    NmapScanner,
    ProfileBook,
    ScanProfile,
    build_command,
    parse_xml,
)

SAMPLES = Path(__file__).parent / "data" / "nmap"
PROFILES = ProfileBook.load()
PROFILE_NAMES = sorted(PROFILES.profiles)
LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.23")
LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def sample(name: str) -> str:
    """Return a recorded nmap XML sample."""
    return (SAMPLES / name).read_text(encoding="utf-8")


def sample_address(text: str) -> str:
    """Return the scanned address recorded in a sample."""
    found = re.search(r'<address addr="([^"]+)"', text)
    assert found is not None
    return found.group(1)


def profile(name: str) -> ScanProfile:
    """Return a packaged profile."""
    found = PROFILES.get(name)
    assert found is not None
    return found


def option_value(argv: list[str], option: str) -> str:
    """Return the argument that follows an option (which must appear exactly once)."""
    assert argv.count(option) == 1, argv
    return argv[argv.index(option) + 1]


# Profiles and the argv ------------------------------------------------------------------------


def test_packaged_profiles_load_with_their_names() -> None:
    """The packaged profiles file loads, and each profile knows its own name."""
    assert PROFILE_NAMES == ["full", "quick", "standard", "voip"]
    assert all(item.name == name for name, item in PROFILES.profiles.items())
    assert PROFILES.get("no-such-profile") is None


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_timeouts_nest_host_then_process_then_job(name: str) -> None:
    """nmap's host timeout ends before the process timeout, which ends before rq's job timeout."""
    chosen = profile(name)
    assert chosen.host_timeout_s < chosen.process_timeout_s < chosen.job_timeout_s
    assert chosen.process_timeout_s == chosen.host_timeout_s + PROCESS_GRACE_S
    assert chosen.job_timeout_s == chosen.process_timeout_s + JOB_GRACE_S


@pytest.mark.parametrize("privileged", [True, False])
@pytest.mark.parametrize("address", [LOOPBACK_V4, LOOPBACK_V6], ids=["v4", "v6"])
@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_build_command_shape(
    name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, privileged: bool
) -> None:
    """Every profile yields a fixed argv: safety options, XML to stdout, `--`, then the address."""
    chosen = profile(name)
    argv, notes = build_command(
        chosen, address, max_rate=123, privileged=privileged, binary="/opt/nmap/bin/nmap"
    )
    assert argv[0] == "/opt/nmap/bin/nmap"
    assert "-n" in argv
    assert "-Pn" in argv
    assert option_value(argv, "--max-rate") == "123"
    assert option_value(argv, "--host-timeout") == f"{chosen.host_timeout_s}s"
    assert option_value(argv, "--max-retries") == str(chosen.max_retries)
    assert option_value(argv, "-oX") == "-"
    assert argv[-1] == str(address)
    assert argv[-2] == "--"
    assert argv.count("--") == 1
    assert ("-6" in argv) is (address.version == 6)
    assert ("-sS" if privileged else "-sT") in argv
    udp_wanted = chosen.udp_ports is not None
    assert ("-sU" in argv) is (udp_wanted and privileged)
    if udp_wanted and not privileged:
        assert notes == ["UDP skipped: worker not privileged (run it as root or with CAP_NET_RAW)"]
        assert "U:" not in " ".join(argv)
    else:
        assert notes == []
    if udp_wanted and privileged:
        assert ",U:" in option_value(argv, "-p")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quick", "T:21,22,23,25,53,80,110,111,119,135,139,143,161,443,445,1723,1900,2121,2323"),
        ("full", "T:1-65535"),
    ],
)
def test_build_command_port_specs(name: str, expected: str) -> None:
    """Port lists become nmap's -p spec; "all" becomes 1-65535."""
    argv, _ = build_command(profile(name), LOOPBACK_V4, max_rate=300, privileged=False)
    assert option_value(argv, "-p").startswith(expected)


def test_build_command_top_ports_and_version_levels() -> None:
    """top:N becomes --top-ports N, and version levels map to -sV options."""
    argv, _ = build_command(profile("standard"), LOOPBACK_V4, max_rate=300, privileged=False)
    assert option_value(argv, "--top-ports") == "1000"
    assert "-p" not in argv
    assert "--version-light" in argv
    normal = ScanProfile(description="d", tcp_ports=[23], version="normal")
    none = ScanProfile(description="d", tcp_ports=[23], version="none")
    argv_normal, _ = build_command(normal, LOOPBACK_V4, max_rate=1, privileged=False)
    argv_none, _ = build_command(none, LOOPBACK_V4, max_rate=1, privileged=False)
    assert "-sV" in argv_normal
    assert "--version-light" not in argv_normal
    assert "-sV" not in argv_none


def test_build_command_canonicalises_ipv6() -> None:
    """Only ipaddress's canonical text of the address reaches nmap."""
    address = ipaddress.IPv6Address("0:0:0:0:0:0:0:1")
    argv, _ = build_command(profile("quick"), address, max_rate=300, privileged=False)
    assert argv[-1] == "::1"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "-oX /tmp/pwned",
        "127.0.0.1 --script=evil",
        "--",
        "",
        "127.0.0.1\x00",
        2130706433,
        b"127.0.0.1",
        ipaddress.ip_network("127.0.0.0/30"),
        None,
    ],
)
def test_build_command_refuses_anything_but_an_ipaddress(address: object) -> None:
    """A string (or any non-address object) is refused before an argv exists."""
    with pytest.raises(TypeError, match="ipaddress"):
        build_command(profile("quick"), address, max_rate=300, privileged=False)  # type: ignore[arg-type]


# Bad profile files ------------------------------------------------------------------------------

BAD_PROFILES = [
    (
        "bad-port",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21, 70000]
        """,
        3,
        "port out of range: '70000'",
    ),
    (
        "reversed-range",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: ["100-20"]
        """,
        3,
        "port out of range",
    ),
    (
        "option-injection-port",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: ["21 --script=evil"]
        """,
        3,
        "not a port or range",
    ),
    (
        "shell-port",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: "21;rm -rf /"
        """,
        3,
        'ports must be a list, "top:N"',
    ),
    (
        "top-zero",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: "top:0"
        """,
        3,
        "top:N",
    ),
    (
        "empty-port-list",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: []
        """,
        3,
        "may not be empty",
    ),
    (
        "udp-top",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            udp_ports: "top:10"
        """,
        3,
        "udp_ports must be a list",
    ),
    (
        "top-with-udp",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: "top:100"
            udp_ports: [5060]
        """,
        3,
        "cannot be combined with udp_ports",
    ),
    (
        "unknown-key",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            nmap_args: "--script=vuln"
        """,
        5,
        "nmap_args: Extra inputs are not permitted",
    ),
    (
        "unknown-top-level-key",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
        extra_args: "-A"
        """,
        5,
        "extra_args: Extra inputs are not permitted",
    ),
    (
        "host-timeout-too-short",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            host_timeout_s: 4
        """,
        3,
        "host_timeout_s must be between 5 and 3600",
    ),
    (
        "host-timeout-too-long",
        """\
        # a comment line first
        profiles:
          slow:
            description: d
            tcp_ports: [21]
            host_timeout_s: 3601
        """,
        4,
        "host_timeout_s must be between 5 and 3600",
    ),
    (
        "retries",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            max_retries: 6
        """,
        3,
        "max_retries must be between 0 and 5",
    ),
    (
        "version-level",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            version: aggressive
        """,
        5,
        "field profiles.quick.version",
    ),
    (
        "unknown-role",
        """\
        profiles:
          quick:
            description: d
            tcp_ports: [21]
            roles: [user, root]
        """,
        5,
        "profiles.quick.roles[1]",
    ),
    (
        "missing-description",
        """\
        profiles:
          quick:
            tcp_ports: [21]
        """,
        3,
        "profiles.quick.description: Field required",
    ),
]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [case[1:] for case in BAD_PROFILES],
    ids=[case[0] for case in BAD_PROFILES],
)
def test_bad_profile_files_fail_with_the_line(
    tmp_path: Path, content: str, line: int, message: str
) -> None:
    """A bad profiles file fails at load with DataFileError naming the file, line and problem."""
    path = tmp_path / "profiles.yaml"
    path.write_text(textwrap.dedent(content), encoding="utf-8")
    with pytest.raises(DataFileError) as failure:
        ProfileBook.load(path)
    text = str(failure.value)
    assert text.startswith(f"{path}:{line}:"), text
    assert message in text


def test_profile_file_of_custom_profiles_loads(tmp_path: Path) -> None:
    """A valid replacement profiles file loads with ranges, "all" UDP and per-role access."""
    path = tmp_path / "profiles.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            profiles:
              lab:
                description: a lab sweep
                tcp_ports: ["1-1024", 8080]
                udp_ports: all
                version: none
                host_timeout_s: 5
                max_retries: 0
                roles: [admin]
            """
        ),
        encoding="utf-8",
    )
    book = ProfileBook.load(path)
    lab = book.get("lab")
    assert lab is not None
    assert lab.name == "lab"
    argv, _ = build_command(lab, LOOPBACK_V4, max_rate=10, privileged=True)
    assert option_value(argv, "-p") == "T:1-1024,8080,U:1-65535"


# parse_xml ------------------------------------------------------------------------------------


def test_parse_recorded_voip_adapter() -> None:
    """The recorded quick scan of the lab VoIP adapter yields telnet, ftp and http with products."""
    text = sample("voip-adapter-quick.xml")
    result = parse_xml(text, sample_address(text))
    assert result.host_state == "up"
    assert result.complete is True
    assert result.notes == []
    found = {(item.port, item.protocol, item.service): item.product for item in result.observations}
    assert found == {
        (21, "tcp", "ftp"): "Netgear broadband router or ZyXel VoIP adapter ftpd",
        (23, "tcp", "telnet"): "Lingo VoIP config telnetd",
        (80, "tcp", "http"): "Linksys PAP2 VoIP http config",
    }
    assert result.info.version == "7.93"
    assert result.info.elapsed_s == pytest.approx(4.5)
    assert result.info.command.endswith(f"-- {sample_address(text)}")


def test_parse_recorded_udp_open_filtered_and_skips_closed() -> None:
    """A voip-profile recording keeps open|filtered UDP SIP and drops every closed port."""
    text = sample("voip-adapter-voip-udp.xml")
    result = parse_xml(text, sample_address(text))
    assert [(item.port, item.protocol, item.state) for item in result.observations] == [
        (21, "tcp", "open"),
        (23, "tcp", "open"),
        (80, "tcp", "open"),
        (5060, "udp", "open|filtered"),
    ]


def test_parse_recorded_host_without_open_ports() -> None:
    """A complete scan of a host with every port closed has no observations and is complete."""
    text = sample("no-open-ports-quick.xml")
    result = parse_xml(text, sample_address(text))
    assert (result.host_state, result.complete, result.observations) == ("up", True, [])


@pytest.mark.parametrize("name", ["host-timeout.xml", "voip-adapter-timedout.xml"])
def test_parse_timed_out_host_is_incomplete_with_a_note(name: str) -> None:
    """A host nmap marked timedout="true" gives an incomplete result that says so."""
    text = sample(name)
    result = parse_xml(text, sample_address(text))
    assert result.complete is False
    assert result.host_state == "up"
    assert result.notes == ["host timed out: results are partial, closed-looking ports may be open"]


def test_parse_timed_out_host_keeps_the_ports_it_found() -> None:
    """Ports seen before the host timeout are still reported."""
    text = sample("voip-adapter-timedout.xml")
    result = parse_xml(text, sample_address(text))
    assert [item.port for item in result.observations] == [21, 23, 80]


def test_parse_real_hostile_banner_is_carried_as_data() -> None:
    """Markup and entities a device put in its banner arrive as plain text (nmap dots out ESC)."""
    text = sample("epson-hostile-banner.xml")
    [item] = parse_xml(text, sample_address(text)).observations
    assert item.product == "Epson printer ftpd"
    assert item.extrainfo == "Epson <b>PX</b> &amp; .[31mRED.[0m . \"q\" 'a'"


def test_parse_hand_edited_hostile_strings_are_carried_verbatim() -> None:
    """C1 ANSI escapes, bidi overrides and markup in service fields are kept as data, not parsed."""
    text = sample("hostile-service-strings.xml")
    result = parse_xml(text, sample_address(text))
    telnet = next(item for item in result.observations if item.port == 23)
    assert telnet.service == "telnet<i>"
    assert telnet.product == "Lingo <script>alert(1)</script> \x9b31mRED\x9b0m \u202egpj.exe"
    assert telnet.version == "1.0\x85\x9b2J"
    assert telnet.extrainfo == (
        "<b>bold</b> *bold* <@U012AB> <!channel> [link](http://lab.invalid) \u200f\u2028"
    )


def test_parse_for_another_address_finds_nothing() -> None:
    """Output about a different host is never attributed to the requested address."""
    text = sample("voip-adapter-quick.xml")
    result = parse_xml(text, "127.0.0.99")
    assert result.observations == []
    assert result.host_state == "down"


def _variants() -> list[tuple[str, str]]:
    text = sample("voip-adapter-quick.xml")
    return [
        ("empty", ""),
        ("whitespace", " \n\t"),
        ("plain-text", "Starting Nmap 7.93 ( https://nmap.org )\nNmap done"),
        ("html", "<html><body>not nmap</body></html>"),
        ("empty-nmaprun", "<nmaprun/>"),
        ("half", text[: len(text) // 2]),
        ("no-closing-tag", text[: text.rindex("</nmaprun>")]),
        ("cut-in-attribute", text[: text.index('product="Lingo') + 12]),
        ("raw-escape", text.replace("Lingo", "Lingo\x1b[31m")),
        ("nul", text.replace("Lingo", "Lingo\x00")),
        ("bad-elapsed", text.replace('elapsed="4.50"', 'elapsed="soon"')),
        ("port-out-of-range", text.replace('portid="21"', 'portid="70000"')),
        ("port-not-a-number", text.replace('portid="21"', 'portid="twenty-one"')),
        ("two-documents", text + text),
        (
            "entity-expansion",
            '<?xml version="1.0"?><!DOCTYPE n [<!ENTITY a "'
            + "a" * 100
            + '">'
            + "".join(
                f'<!ENTITY {chr(98 + level)} "' + f"&{chr(97 + level)};" * 10 + '">'
                for level in range(8)
            )
            + ']><nmaprun args="&i;"/>',
        ),
    ]


@pytest.mark.parametrize(
    "xml_text", [case[1] for case in _variants()], ids=[case[0] for case in _variants()]
)
def test_parse_junk_raises_nmap_failed(xml_text: str) -> None:
    """Empty, truncated, malformed or impossible output raises NmapFailed with a safe reason."""
    with pytest.raises(NmapFailed) as failure:
        parse_xml(xml_text, "127.100.44.50")
    assert failure.value.reason == "nmap produced output that could not be read"


@given(st.data())
@hypothesis_settings(max_examples=150, deadline=None)
def test_any_truncation_of_a_recording_parses_or_fails_cleanly(data: st.DataObject) -> None:
    """Cutting nmap's output anywhere gives a result or NmapFailed, never another exception."""
    text = sample("voip-adapter-quick.xml")
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    try:
        result = parse_xml(text[:cut], "127.100.44.50")
    except NmapFailed:
        return
    assert cut >= text.rindex("</nmaprun>")
    assert len(result.observations) == 3


# NmapScanner with stand-in programs --------------------------------------------------------------


def stand_in(tmp_path: Path, body: str, name: str = "nmap") -> Path:
    """Write an executable /bin/sh stand-in for nmap and return its path."""
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def quick() -> ScanProfile:
    """The packaged quick profile."""
    return profile("quick")


@pytest.mark.parametrize("binary", ["portpatrol-no-such-nmap", "/nonexistent/dir/nmap"])
def test_missing_binary_says_to_install_nmap(binary: str, lab_address: str) -> None:
    """A worker without nmap fails the scan with a reason that names the installation."""
    scanner = NmapScanner(binary=binary, privileged=False)
    with pytest.raises(NmapFailed) as failure:
        scanner.scan(ipaddress.IPv4Address(lab_address), quick())
    assert "not installed" in failure.value.reason
    assert "apt-get install nmap" in failure.value.reason


def test_binary_that_cannot_be_executed_fails_cleanly(tmp_path: Path, lab_address: str) -> None:
    """A present but non-executable nmap is a NmapFailed, not a stray OSError."""
    script = tmp_path / "nmap"
    script.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    script.chmod(0o600)
    with pytest.raises(NmapFailed) as failure:
        NmapScanner(binary=str(script), privileged=False).scan(
            ipaddress.IPv4Address(lab_address), quick()
        )
    assert "could not be started" in failure.value.reason


def test_non_zero_exit_reports_first_stderr_line(tmp_path: Path, lab_address: str) -> None:
    """A failing nmap is reported with its exit status and only the first line of stderr."""
    script = stand_in(
        tmp_path,
        """\
        echo "Failed to open device lo0" >&2
        echo "QUITTING! second line" >&2
        exit 3
        """,
    )
    with pytest.raises(NmapFailed) as failure:
        NmapScanner(binary=str(script), privileged=False).scan(
            ipaddress.IPv4Address(lab_address), quick()
        )
    assert failure.value.reason == "nmap failed (exit 3): Failed to open device lo0"


@pytest.mark.parametrize(
    ("stderr_command", "expected_tail"),
    [
        ("", "no error message"),
        ("printf '\\n\\n  \\n' >&2", "no error message"),
        ("head -c 100000 /dev/zero | tr '\\0' 'A' >&2", "A" * 200),
    ],
    ids=["silent", "blank-lines", "huge-line"],
)
def test_non_zero_exit_reason_is_bounded(
    tmp_path: Path, lab_address: str, stderr_command: str, expected_tail: str
) -> None:
    """A silent or enormous stderr still gives a one-line reason of bounded length."""
    script = stand_in(tmp_path, f"{stderr_command}\nexit 1\n")
    with pytest.raises(NmapFailed) as failure:
        NmapScanner(binary=str(script), privileged=False).scan(
            ipaddress.IPv4Address(lab_address), quick()
        )
    assert failure.value.reason == f"nmap failed (exit 1): {expected_tail}"


@pytest.mark.parametrize(
    "stdout_command",
    [
        "true",
        "echo 'Starting Nmap 7.93'",
        "printf '<?xml version=\"1.0\"?><nmaprun'",
        "head -c 5000 /dev/urandom",
    ],
    ids=["nothing", "text", "truncated", "binary-noise"],
)
def test_unparseable_output_with_exit_zero_fails(
    tmp_path: Path, lab_address: str, stdout_command: str
) -> None:
    """Exit status 0 with output that is not nmap XML is a failure, not an empty result."""
    script = stand_in(tmp_path, f"{stdout_command}\nexit 0\n")
    with pytest.raises(NmapFailed) as failure:
        NmapScanner(binary=str(script), privileged=False).scan(
            ipaddress.IPv4Address(lab_address), quick()
        )
    assert failure.value.reason == "nmap produced output that could not be read"


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process the reaper of orphaned descendants, so killed grandchildren are reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reaped(pid: int, deadline_s: float = 10.0) -> bool:
    """Reap a (killed) orphan adopted by this process; False if it is still running."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True  # already reaped (by subprocess, for the direct child)
        if done == pid:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.usefixtures("subreaper")
def test_hanging_nmap_is_killed_with_its_process_group(tmp_path: Path, lab_address: str) -> None:
    """A process that outlives the timeout is stopped, and so is everything it started."""
    script = stand_in(
        tmp_path,
        f"""\
        trap '' TERM HUP INT
        echo $$ > "{tmp_path}/script.pid"
        sleep 300 &
        echo $! > "{tmp_path}/child.pid"
        wait
        """,
    )
    scanner = NmapScanner(binary=str(script), privileged=False, process_timeout_s=1)
    with pytest.raises(NmapFailed) as failure:
        scanner.scan(ipaddress.IPv4Address(lab_address), quick())
    assert failure.value.reason == "nmap did not finish within 1 s and was stopped"
    for name in ("script.pid", "child.pid"):
        pid = int((tmp_path / name).read_text(encoding="utf-8"))
        assert reaped(pid), f"{name} {pid} survived the timeout"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_process_timeout_never_exceeds_the_profile(tmp_path: Path, lab_address: str) -> None:
    """An override longer than the profile's process timeout is capped to the profile's."""
    script = stand_in(tmp_path, "echo nope >&2\nexit 2\n")
    scanner = NmapScanner(binary=str(script), privileged=False, process_timeout_s=10_000)
    with pytest.raises(NmapFailed, match="exit 2"):
        scanner.scan(ipaddress.IPv4Address(lab_address), quick())


def test_scanner_runs_fixed_argv_in_a_clean_environment(
    tmp_path: Path, lab_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nmap gets the built argv and no inherited secrets; the report's command names plain nmap."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:do-not-leak")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    recording = sample("voip-adapter-quick.xml").replace("127.100.44.50", lab_address)
    (tmp_path / "out.xml").write_text(recording, encoding="utf-8")
    script = stand_in(
        tmp_path,
        f"""\
        for argument in "$@"; do printf '%s\\n' "$argument"; done > "{tmp_path}/argv"
        env > "{tmp_path}/env"
        cat "{tmp_path}/out.xml"
        """,
    )
    address = ipaddress.IPv4Address(lab_address)
    chosen = profile("voip")
    result = NmapScanner(binary=str(script), privileged=False, max_rate=77).scan(address, chosen)
    expected, notes = build_command(chosen, address, max_rate=77, privileged=False)
    assert (tmp_path / "argv").read_text(encoding="utf-8").splitlines() == expected[1:]
    environment = (tmp_path / "env").read_text(encoding="utf-8")
    assert "do-not-leak" not in environment
    assert "hunter2" not in environment
    assert "LANG=C" in environment.splitlines()
    assert result.notes == notes
    assert result.info.command.startswith("nmap -n -Pn ")
    assert result.info.command.endswith(f"-- {lab_address}")
    assert str(script) not in result.info.command
    assert [item.service for item in result.observations] == ["ftp", "telnet", "http"]


def test_scanner_refuses_a_string_address_before_running_anything(tmp_path: Path) -> None:
    """A str target never reaches the process: TypeError, and the stand-in is never started."""
    script = stand_in(tmp_path, f'touch "{tmp_path}/ran"\nexit 1\n')
    with pytest.raises(TypeError):
        NmapScanner(binary=str(script), privileged=False).scan(
            "127.0.0.1 -oN /tmp/x",  # type: ignore[arg-type]
            quick(),
        )
    assert not (tmp_path / "ran").exists()


# The real nmap ---------------------------------------------------------------------------------


@pytest.mark.nmap
def test_real_nmap_finds_the_lab_voip_adapter(lab_address: str) -> None:
    """Real nmap with the quick profile finds the lab adapter's telnet, ftp and http ports."""
    chosen = quick()
    assert isinstance(chosen.tcp_ports, list)
    scanned = {int(port) for port in chosen.tcp_ports}
    with voip_adapter(lab_address) as host:
        expected = {(port, name) for name, port in host.ports.items() if port in scanned}
        result = NmapScanner(max_rate=1000).scan(ipaddress.IPv4Address(lab_address), chosen)
    assert result.host_state == "up"
    assert result.complete is True
    assert {(item.port, item.service) for item in result.observations} == expected
    assert {name for _, name in expected} == {"telnet", "ftp", "http"}
    telnet = next(item for item in result.observations if item.service == "telnet")
    assert telnet.product == "Lingo VoIP config telnetd"
    assert result.info.version == "7.93"
    assert result.info.command.endswith(f"-- {lab_address}")

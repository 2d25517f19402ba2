"""Scan profiles and the one way nmap is run: fixed argv, one canonical address, XML out.

Security shape: the argv is built here from profile data and the canonical address string that
``ipaddress`` produced; ``--`` ends the options so nothing after it can be read as one, and no
user text is ever part of the command. python-nmap only parses the XML (its ``scan()`` splits
strings with ``shlex``, which we never let near user input).

Timeouts nest: nmap's ``--host-timeout`` < this module's process timeout < the rq job timeout,
so nmap reports a partial result before we kill it, and we kill it before rq kills us.
The nmap process lives in its own process group and gets SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), so a stopped or killed job leaves no nmap behind.
Imports: stdlib, python-nmap, ``workers.datafile``, ``workers.models``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import shlex
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

import nmap
from pydantic import Field

from workers.datafile import PACKAGED_DATA, load_data_file
from workers.models import Frozen, NmapInfo, Observation, Role

PROCESS_GRACE_S = 15
"""How much longer than nmap's host timeout the nmap process may run before we kill it."""

JOB_GRACE_S = 30
"""How much longer than the process timeout rq lets a job run (policy re-check, rules, I/O)."""

PR_SET_PDEATHSIG = 1

_PORT_ITEM = re.compile(r"^\d{1,5}(-\d{1,5})?$")


class NmapFailed(Exception):
    """nmap could not produce a usable result; ``reason`` is safe to show a user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_ports(value: str | list[int | str] | None) -> str | list[int | str] | None:
    if value is None or value == "all":
        return value
    if isinstance(value, str):
        if not re.fullmatch(r"top:\d{1,5}", value) or not 1 <= int(value[4:]) <= 65535:
            raise ValueError('ports must be a list, "top:N" (N from 1 to 65535) or "all"')
        return value
    if not value:
        raise ValueError("a port list may not be empty (nmap would get an empty -p)")
    for item in value:
        text = str(item)
        if not _PORT_ITEM.match(text):
            raise ValueError(f"not a port or range: {text!r}")
        bounds = [int(part) for part in text.split("-")]
        if not all(1 <= bound <= 65535 for bound in bounds) or bounds != sorted(bounds):
            raise ValueError(f"port out of range: {text!r}")
    return value


class ScanProfile(Frozen):
    """What one named scan does; every field maps to a fixed nmap option."""

    name: str = ""
    description: str
    tcp_ports: str | list[int | str]
    udp_ports: str | list[int | str] | None = None
    version: Literal["none", "light", "normal"] = "light"
    host_timeout_s: int = 90
    max_retries: int = 1
    roles: list[Role] = Field(default_factory=lambda: [Role.USER, Role.AGENT, Role.ADMIN])

    def model_post_init(self, context: Any, /) -> None:
        """Validate port specifications once, at load time."""
        _check_ports(self.tcp_ports)
        _check_ports(self.udp_ports)
        # nmap's --top-ports picks ports for every scan type at once, so it cannot name the UDP
        # ports separately; build_command would otherwise fail at scan time, not at load.
        if isinstance(self.udp_ports, str) and self.udp_ports.startswith("top:"):
            raise ValueError('udp_ports must be a list or "all", not "top:N"')
        if (
            isinstance(self.tcp_ports, str)
            and self.tcp_ports.startswith("top:")
            and self.udp_ports is not None
        ):
            raise ValueError('tcp_ports "top:N" cannot be combined with udp_ports')
        if not 5 <= self.host_timeout_s <= 3600:
            raise ValueError("host_timeout_s must be between 5 and 3600")
        if not 0 <= self.max_retries <= 5:
            raise ValueError("max_retries must be between 0 and 5")

    @property
    def process_timeout_s(self) -> int:
        """Wall-clock limit for the nmap process."""
        return self.host_timeout_s + PROCESS_GRACE_S

    @property
    def job_timeout_s(self) -> int:
        """Wall-clock limit for the rq job running this profile."""
        return self.process_timeout_s + JOB_GRACE_S


class ProfileBook(Frozen):
    """The profiles file: name → profile."""

    profiles: dict[str, ScanProfile]

    @classmethod
    def load(cls, path: Path | None = None) -> ProfileBook:
        """Load and validate a profiles file (default: the packaged one)."""
        book = load_data_file(path or PACKAGED_DATA / "profiles.yaml", cls)
        named = {
            name: profile.model_copy(update={"name": name})
            for name, profile in book.profiles.items()
        }
        return cls(profiles=named)

    def get(self, name: str) -> ScanProfile | None:
        """Return the named profile, or None."""
        return self.profiles.get(name)


def _port_spec(value: str | list[int | str]) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if value == "all":
        return "1-65535"
    return ""


def build_command(
    profile: ScanProfile,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    *,
    max_rate: int,
    privileged: bool,
    binary: str = "nmap",
) -> tuple[list[str], list[str]]:
    """Return the nmap argv for one address and the notes the report should carry.

    ``address`` must be an ``ipaddress`` object: its ``str`` is the only target text nmap sees.
    """
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise TypeError("address must be an ipaddress.IPv4Address or IPv6Address")
    notes: list[str] = []
    argv = [binary, "-n", "-Pn", "--max-retries", str(profile.max_retries)]
    argv += ["--host-timeout", f"{profile.host_timeout_s}s", "--max-rate", str(max_rate)]
    scan_udp = profile.udp_ports is not None and privileged
    if profile.udp_ports is not None and not privileged:
        notes.append("UDP skipped: worker not privileged (run it as root or with CAP_NET_RAW)")
    argv.append("-sS" if privileged else "-sT")
    if scan_udp:
        argv.append("-sU")
    tcp = profile.tcp_ports
    if isinstance(tcp, str) and tcp.startswith("top:"):
        if scan_udp:
            raise ValueError("top:N cannot be combined with UDP ports in one profile")
        argv += ["--top-ports", tcp.removeprefix("top:")]
    else:
        spec = f"T:{_port_spec(tcp)}"
        if scan_udp and profile.udp_ports is not None:
            spec += f",U:{_port_spec(profile.udp_ports)}"
        argv += ["-p", spec]
    if profile.version == "light":
        argv += ["-sV", "--version-light"]
    elif profile.version == "normal":
        argv.append("-sV")
    if address.version == 6:
        argv.append("-6")
    argv += ["-oX", "-", "--", str(address)]
    return argv, notes


class NmapResult(Frozen):
    """What one nmap run found about one host."""

    host_state: Literal["up", "down", "unknown"]
    complete: bool
    observations: list[Observation]
    notes: list[str]
    info: NmapInfo


class _XmlPortScanner(nmap.PortScanner):  # type: ignore[misc]
    """python-nmap's XML parser without its constructor, which runs ``nmap -V`` every time."""

    def __init__(self) -> None:
        self._nmap_last_output = ""
        self._scan_result: dict[str, Any] = {}


def parse_xml(xml_text: str, address: str) -> NmapResult:
    """Turn nmap's XML output for one address into observations (python-nmap does the parsing)."""
    try:
        return _read_xml(xml_text, address)
    except ValueError as error:  # well-formed XML with impossible values: port 70000, elapsed "x"
        raise NmapFailed("nmap produced output that could not be read") from error


def _read_xml(xml_text: str, address: str) -> NmapResult:
    try:
        parsed = _XmlPortScanner().analyse_nmap_xml_scan(xml_text)
        root = ET.fromstring(xml_text)  # noqa: S314 - nmap's own output
    except Exception as error:  # python-nmap raises bare Exceptions and AttributeErrors on junk
        raise NmapFailed("nmap produced output that could not be read") from error
    host_element = next(
        (
            host
            for host in root.iter("host")
            if any(item.get("addr") == address for item in host.iter("address"))
        ),
        None,
    )
    notes: list[str] = []
    timed_out = host_element is not None and host_element.get("timedout") == "true"
    if timed_out:
        notes.append("host timed out: results are partial, closed-looking ports may be open")
    tunnels = {
        (port.get("protocol"), port.get("portid")): service.get("tunnel", "")
        for port in (host_element.iter("port") if host_element is not None else ())
        if (service := port.find("service")) is not None
    }
    host = parsed.get("scan", {}).get(address)
    observations: list[Observation] = []
    host_state: Literal["up", "down", "unknown"] = "unknown"
    if host is not None:
        state = host.get("status", {}).get("state", "unknown")
        host_state = state if state in ("up", "down") else "unknown"
        for protocol in ("tcp", "udp", "sctp"):
            for port, details in sorted(host.get(protocol, {}).items()):
                if details.get("state") not in ("open", "open|filtered"):
                    continue
                observations.append(
                    Observation(
                        port=int(port),
                        protocol=protocol,
                        state=details["state"],
                        service=str(details.get("name", "")),
                        product=str(details.get("product", "")),
                        version=str(details.get("version", "")),
                        extrainfo=str(details.get("extrainfo", "")),
                        tunnel=tunnels.get((protocol, str(port)), "") or "",
                    )
                )
    elif not timed_out:
        host_state = "down"
    info = NmapInfo(
        version=root.get("version", ""),
        command=root.get("args", ""),
        elapsed_s=float(root.find("runstats/finished").get("elapsed", "0"))  # type: ignore[union-attr]
        if root.find("runstats/finished") is not None
        else 0.0,
    )
    return NmapResult(
        host_state=host_state,
        complete=not timed_out,
        observations=observations,
        notes=notes,
        info=info,
    )


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when this process's parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # communicate() was interrupted, so the pipes are still open: close them here rather than
    # leak two descriptors per stopped scan until the garbage collector finds them.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def is_privileged() -> bool:
    """Return whether raw-socket scans (SYN, UDP) are possible: root, as nmap itself decides."""
    return os.geteuid() == 0


class NmapScanner:
    """Runs nmap for one canonical address with a profile's fixed arguments."""

    def __init__(
        self,
        *,
        max_rate: int = 300,
        binary: str = "nmap",
        privileged: bool | None = None,
        process_timeout_s: float | None = None,
    ) -> None:
        self.max_rate = max_rate
        self.binary = binary
        self.privileged = is_privileged() if privileged is None else privileged
        self.process_timeout_s = process_timeout_s
        """Overrides the profile's process timeout (it must stay below the rq job timeout)."""

    def scan(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, profile: ScanProfile
    ) -> NmapResult:
        """Run nmap and parse its result; raise NmapFailed with a user-safe reason."""
        argv, notes = build_command(
            profile, address, max_rate=self.max_rate, privileged=self.privileged, binary=self.binary
        )
        timeout = min(
            self.process_timeout_s or profile.process_timeout_s, profile.process_timeout_s
        )
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                process_group=0,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
            )
        except FileNotFoundError as error:
            raise NmapFailed(
                "nmap is not installed on the worker (apt-get install nmap)"
            ) from error
        except OSError as error:  # not executable, not a program: still the worker's setup
            raise NmapFailed(
                f"nmap could not be started on the worker ({error.strerror or error})"
            ) from error
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            _kill_group(process)
            raise NmapFailed(
                f"nmap did not finish within {timeout:.0f} s and was stopped"
            ) from error
        except BaseException:
            # A job timeout or stop arrives as an exception in this thread: nmap dies with it.
            _kill_group(process)
            raise
        if process.returncode != 0:
            detail = stderr.decode("utf-8", "replace").strip().splitlines()
            first = detail[0][:200] if detail else "no error message"
            raise NmapFailed(f"nmap failed (exit {process.returncode}): {first}")
        result = parse_xml(stdout.decode("utf-8", "replace"), str(address))
        elapsed = round(time.monotonic() - started, 3)
        info = result.info.model_copy(
            update={"command": shlex.join(["nmap", *argv[1:]]), "elapsed_s": elapsed}
        )
        return result.model_copy(update={"notes": notes + result.notes, "info": info})

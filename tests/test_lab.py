"""Tests for bot.lab: loopback imitation services, checked with plain sockets and the real nmap."""

from __future__ import annotations

import http.client
import ipaddress
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest

from bot.lab import (
    TELNET_NEGOTIATION,
    LabHost,
    LabService,
    free_loopback_address,
    voip_adapter,
)

HOSTILE_BANNER = b'<a href="https://evil.example">login</a>\r\n</code><b><!channel>\x00\xff\x1b[2J'


def connect(host: LabHost, name: str, timeout: float = 5.0) -> socket.socket:
    """Open a TCP connection to one service of a running lab host."""
    return socket.create_connection((host.address, host.ports[name]), timeout=timeout)


def receive_until(sock: socket.socket, marker: bytes) -> bytes:
    """Read until marker has arrived (or the server closed) and return everything read."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def receive_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection."""
    return receive_until(sock, b"\0never\0")


def lab_threads(host: LabHost) -> list[threading.Thread]:
    """The threads a lab host is running (they are named after its address)."""
    return [thread for thread in threading.enumerate() if host.address in thread.name]


@pytest.fixture
def voip() -> Iterator[LabHost]:
    """A running simulated VoIP adapter on high ports and an address of its own."""
    with voip_adapter(free_loopback_address(), privileged=False) as host:
        yield host


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "192.168.1.1",
        "8.8.8.8",
        "0.0.0.0",
        "::",
        "fe80::1",
        "::ffff:127.0.0.1",
        "localhost",
        "127.0.0.1/8",
        "127.000.000.001",
        " 127.0.0.1",
        "",
    ],
)
def test_refuses_addresses_outside_loopback(address: str) -> None:
    """A lab host refuses any address that is not a plain 127.0.0.0/8 or ::1 address."""
    with pytest.raises(ValueError, match=r"loopback|127"):
        LabHost(address, [LabService("raw", 0, b"x", "raw")])


@pytest.mark.parametrize(
    ("address", "canonical"),
    [("127.0.0.1", "127.0.0.1"), ("127.255.255.254", "127.255.255.254"), ("0:0::1", "::1")],
)
def test_accepts_loopback_addresses_in_canonical_form(address: str, canonical: str) -> None:
    """Loopback addresses are accepted and kept in their canonical spelling."""
    assert LabHost(address, []).address == canonical


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "gopher"},
        {"port": 70000},
        {"port": -1},
        {"delay": -1.0},
        {"name": ""},
        {"status": 999},
    ],
)
def test_lab_service_refuses_impossible_settings(kwargs: dict[str, object]) -> None:
    """A service that could not be served as described is refused when it is defined."""
    settings: dict[str, object] = {"name": "svc", "port": 0, "banner": b"x", "kind": "raw"}
    settings.update(kwargs)
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        LabService(**settings)  # type: ignore[arg-type]


def test_lab_host_refuses_duplicate_names_and_ports() -> None:
    """Two services with one name, or one fixed port, are refused before anything binds."""
    with pytest.raises(ValueError, match="unique"):
        LabHost("127.0.0.1", [LabService("a", 0, b"", "raw"), LabService("a", 0, b"", "raw")])
    with pytest.raises(ValueError, match="share a port"):
        LabHost("127.0.0.1", [LabService("a", 4444, b"", "raw"), LabService("b", 4444, b"", "raw")])


def test_port_zero_binds_a_free_port_picked_by_the_os() -> None:
    """Services asking for port 0 get distinct real ports, reported by name in ports."""
    services = [LabService(kind, 0, b"220 x", kind) for kind in ("ftp", "smtp", "raw")]
    host = LabHost(free_loopback_address(), services)
    assert host.ports == {"ftp": 0, "smtp": 0, "raw": 0}
    with host:
        ports = host.ports
        assert all(port > 0 for port in ports.values())
        assert len(set(ports.values())) == 3
        with connect(host, "ftp") as sock:
            assert receive_until(sock, b"\n").startswith(b"220")


def test_voip_adapter_uses_real_ports_only_when_privileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter listens on 23/21/80 when privileged and on 2323/2121/8080 otherwise."""
    assert voip_adapter(privileged=True).ports == {"telnet": 23, "ftp": 21, "http": 80}
    assert voip_adapter(privileged=False).ports == {"telnet": 2323, "ftp": 2121, "http": 8080}
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert voip_adapter().ports["telnet"] == 23
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert voip_adapter().ports["telnet"] == 2323
    assert voip_adapter().address == "127.0.0.23"


def test_telnet_greets_like_a_lingo_adapter(voip: LabHost) -> None:
    """The adapter's telnet offers ECHO and shows the bare "Login: " prompt of Lingo devices."""
    with connect(voip, "telnet") as sock:
        assert receive_until(sock, b"Login: ") == b"\xff\xfb\x01Login: "


def test_telnet_answers_empty_lines_as_nmap_fingerprints_lingo(voip: LabHost) -> None:
    """Two empty lines get exactly the reply nmap's "Lingo VoIP config telnetd" match expects."""
    with connect(voip, "telnet") as sock:
        sock.sendall(b"\r\n\r\n")
        expected = b"\xff\xfb\x01Login: \r\nLogin: \r\nLogin: "
        assert receive_until(sock, expected) == expected


def test_telnet_never_accepts_a_login(voip: LabHost) -> None:
    """A user name is echoed, the password is not, and the login is always incorrect."""
    with connect(voip, "telnet") as sock:
        receive_until(sock, b"Login: ")
        sock.sendall(b"admin\r\n")
        assert receive_until(sock, b"Password: ") == b"admin\r\nPassword: "
        sock.sendall(b"admin\r\n")
        reply = receive_until(sock, b"Login: ")
        assert reply == b"\r\nLogin incorrect\r\n\r\nLogin: "
        assert b"admin" not in reply


def test_telnet_hangs_up_after_three_failed_logins(voip: LabHost) -> None:
    """The third wrong password ends the session, as embedded login programs do."""
    with connect(voip, "telnet") as sock:
        sock.sendall(b"root\r\nroot\r\n" * 3)
        assert receive_all(sock).count(b"Login incorrect") == 3


def test_telnet_declines_options_it_did_not_offer(voip: LabHost) -> None:
    """Requests for unoffered options are refused; agreeing to the offered ECHO is not answered."""
    with connect(voip, "telnet") as sock:
        receive_until(sock, b"Login: ")
        sock.sendall(b"\xff\xfd\x01\xff\xfd\x03\xff\xfb\x18")  # DO ECHO, DO SGA, WILL TTYPE
        assert receive_until(sock, b"\xff\xfe\x18") == b"\xff\xfc\x03\xff\xfe\x18"


def test_telnet_hangs_up_on_unsolicited_subnegotiation(voip: LabHost) -> None:
    """A tn3270-style opening (an unrequested TERMINAL-TYPE IS) ends the session at once."""
    with connect(voip, "telnet") as sock:
        sock.sendall(b"\xff\xfb\x18\xff\xfa\x18\x00IBM-3279-4-E\xff\xf0")
        start = time.monotonic()
        assert receive_all(sock).startswith(b"\xff\xfb\x01Login: ")
        assert time.monotonic() - start < 2.0


def test_telnet_puts_default_negotiation_before_a_text_banner() -> None:
    """A banner without its own IAC commands follows DO NEW-ENVIRON, and nothing is echoed."""
    banner = b"Linksys PAP2T VoIP adapter (Lingo)\r\nlogin: "
    host = LabHost(free_loopback_address(), [LabService("telnet", 0, banner, "telnet")])
    with host, connect(host, "telnet") as sock:
        assert receive_until(sock, b"login: ") == TELNET_NEGOTIATION + banner
        sock.sendall(b"\xff\xfb\x27admin\n")  # WILL NEW-ENVIRON: what we asked for
        assert receive_until(sock, b"Password: ") == b"Password: "


def test_ftp_greets_and_refuses_every_login(voip: LabHost) -> None:
    """The FTP service greets with 220, answers the basic commands and never logs anyone in."""
    with connect(voip, "ftp") as sock:
        assert receive_until(sock, b"\r\n").startswith(b"220  FTP version 1.0 ready at ")
        replies = []
        for command in (b"SYST", b"FEAT", b"HELP", b"USER anonymous", b"PASS a@b", b"LIST"):
            sock.sendall(command + b"\r\n")
            replies.append(receive_until(sock, b"\r\n")[:3])
        assert replies == [b"215", b"211", b"214", b"331", b"530", b"530"]
        sock.sendall(b"QUIT\r\n")
        assert receive_all(sock).startswith(b"221")


def test_http_serves_the_adapter_login_page(voip: LabHost) -> None:
    """GET / returns the PAP2 page with its digest challenge and a login form."""
    connection = http.client.HTTPConnection(voip.address, voip.ports["http"], timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith('Digest  realm="pap user"')
    assert b"<title>Linksys PAP2 Configuration</title>" in body
    assert b"Linksys PAP2 / Lingo VoIP adapter" in body
    assert b'type="password"' in body
    assert int(response.getheader("Content-Length", "-1")) == len(body)


def test_http_puts_the_server_header_first() -> None:
    """The Server header follows the status line directly, where nmap's matches look for it."""
    page = LabService("http", 0, b"<html></html>", "http")
    with LabHost(free_loopback_address(), [page]) as host, connect(host, "http") as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        response = receive_all(sock)
    assert response.startswith(b"HTTP/1.1 200 OK\r\nServer: thttpd/2.29 23May2018\r\n")
    assert response.endswith(b"\r\n\r\n<html></html>")


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "has_body"),
    [
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 401 Unauthorized", False),
        (b"OPTIONS / HTTP/1.0\r\n\r\n", b"HTTP/1.1 200 OK", False),
        (b"POST /login HTTP/1.0\r\nContent-Length: 3\r\n\r\na=b", b"HTTP/1.1 405 ", True),
        (b"GET /admin/ HTTP/1.0\r\n\r\n", b"HTTP/1.1 404 Not Found", True),
        (b"\r\n\r\n", b"HTTP/1.1 400 Bad Request", True),
        (b"\x80\x00\x00\x28\x72\xfe\x1d\x13", b"HTTP/1.1 400 Bad Request", True),
    ],
)
def test_http_answers_other_requests_and_closes(
    voip: LabHost, request_bytes: bytes, status_line: bytes, has_body: bool
) -> None:
    """HEAD and OPTIONS get no body, other methods and paths a 4xx, and each reply closes."""
    with connect(voip, "http", timeout=2) as sock:
        sock.sendall(request_bytes)
        response = receive_all(sock)  # a timeout here would mean the server kept the socket
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(status_line)
    assert bool(body) is has_body
    assert b"Connection: close" in head


def test_smtp_greets_and_relays_nothing() -> None:
    """The SMTP service greets with its banner, answers EHLO and refuses every recipient."""
    service = LabService("smtp", 0, b"220 mail.lab.invalid ESMTP Postfix", "smtp")
    with LabHost(free_loopback_address(), [service]) as host, connect(host, "smtp") as sock:
        assert receive_until(sock, b"\n") == b"220 mail.lab.invalid ESMTP Postfix\r\n"
        sock.sendall(b"EHLO me\r\n")
        assert receive_until(sock, b"250 ").startswith(b"250-")
        sock.sendall(b"MAIL FROM:<a@b>\r\n")
        assert receive_until(sock, b"\n").startswith(b"554")
        sock.sendall(b"QUIT\r\n")
        assert receive_all(sock).startswith(b"221")


def test_pop3_greets_and_refuses_every_login() -> None:
    """The POP3 service greets with +OK and answers every password with -ERR."""
    service = LabService("pop3", 0, b"+OK Dovecot ready.", "pop3")
    with LabHost(free_loopback_address(), [service]) as host, connect(host, "pop3") as sock:
        assert receive_until(sock, b"\n") == b"+OK Dovecot ready.\r\n"
        sock.sendall(b"USER root\r\nPASS toor\r\n")
        reply = receive_until(sock, b"failed.\r\n")
        assert reply == b"+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
        sock.sendall(b"QUIT\r\n")
        assert b"+OK" in receive_all(sock)


def test_raw_sends_any_bytes_verbatim_then_hangs_up_on_input() -> None:
    """A raw service sends its banner byte for byte and closes once the client says anything."""
    service = LabService("raw", 0, HOSTILE_BANNER, "raw")
    with LabHost(free_loopback_address(), [service]) as host, connect(host, "raw") as sock:
        assert receive_until(sock, HOSTILE_BANNER) == HOSTILE_BANNER
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert receive_all(sock) == b""


def test_delay_postpones_the_greeting() -> None:
    """A delayed service waits that long before it greets."""
    service = LabService("ftp", 0, b"220 slow FTP server ready", "ftp", delay=0.6)
    with LabHost(free_loopback_address(), [service]) as host, connect(host, "ftp") as sock:
        start = time.monotonic()
        assert receive_until(sock, b"\n").startswith(b"220")
        assert time.monotonic() - start >= 0.5


def test_silent_clients_are_dropped_after_the_silent_timeout() -> None:
    """A client that never sends a byte is disconnected after silent_timeout, not idle_timeout."""
    service = LabService("http", 0, b"", "http")
    host = LabHost(free_loopback_address(), [service], silent_timeout=0.3, idle_timeout=30)
    with host, connect(host, "http") as sock:
        start = time.monotonic()
        assert receive_all(sock) == b""
        assert time.monotonic() - start < 2.0


def test_many_concurrent_and_abrupt_clients_are_served_quietly(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Dozens of parallel, reset and instantly closed connections break nothing and log nothing."""
    service = LabService("ftp", 0, b"220 busy FTP server ready", "ftp")
    with LabHost(free_loopback_address(), [service]) as host:
        greetings: list[bytes] = []

        def greet() -> None:
            with connect(host, "ftp") as sock:
                greetings.append(receive_until(sock, b"\n"))

        def reset() -> None:
            sock = connect(host, "ftp")
            # Linger 0 turns close() into a reset, the rudest way a client can leave.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        workers = [threading.Thread(target=greet) for _ in range(30)]
        workers += [threading.Thread(target=reset) for _ in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        for _ in range(20):
            connect(host, "ftp").close()
        assert greetings == [b"220 busy FTP server ready\r\n"] * 30
        with connect(host, "ftp") as sock:
            assert receive_until(sock, b"\n").startswith(b"220")
    assert "Traceback" not in capfd.readouterr().err


def test_stop_frees_the_port_at_once_even_with_clients_connected() -> None:
    """After stop() connections are refused and the same port can be bound again immediately."""
    address = free_loopback_address()
    service = LabService("telnet", 0, b"login: ", "telnet")
    host = LabHost(address, [service])
    host.start()
    port = host.ports["telnet"]
    with connect(host, "telnet") as idle_client:
        receive_until(idle_client, b"login: ")
        host.stop()
        assert receive_all(idle_client) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=2).close()
    with LabHost(address, [LabService("telnet", port, b"login: ", "telnet")]) as again:
        assert again.ports["telnet"] == port


def test_stop_joins_every_thread_within_about_a_second() -> None:
    """stop() returns quickly and leaves no thread behind, even mid-delay and mid-conversation."""
    services = [
        LabService("slow", 0, b"220 slow", "ftp", delay=30),
        LabService("telnet", 0, b"login: ", "telnet"),
    ]
    host = LabHost(free_loopback_address(), services)
    host.start()
    clients = [connect(host, "slow"), connect(host, "telnet"), connect(host, "telnet")]
    try:
        deadline = time.monotonic() + 5
        while len(lab_threads(host)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        host.stop()
        assert time.monotonic() - start < 1.5
        assert lab_threads(host) == []
    finally:
        for client in clients:
            client.close()


def test_start_and_stop_are_idempotent() -> None:
    """Starting twice binds once, stopping twice is harmless, and a stopped host can restart."""
    host = LabHost(free_loopback_address(), [LabService("raw", 0, b"hi", "raw")])
    host.start()
    first = host.ports["raw"]
    host.start()
    assert host.ports["raw"] == first
    host.stop()
    host.stop()
    with host, connect(host, "raw") as sock:
        assert receive_until(sock, b"hi") == b"hi"


def test_free_loopback_address_never_repeats_itself() -> None:
    """Each call returns a fresh 127.100.0.0/16 address that no other lab host holds."""
    with voip_adapter(free_loopback_address(), privileged=False) as running:
        addresses = [free_loopback_address() for _ in range(200)]
    assert len(set(addresses)) == 200
    assert running.address not in addresses
    lab_net = ipaddress.ip_network("127.100.0.0/16")
    assert all(ipaddress.ip_address(address) in lab_net for address in addresses)


def test_ipv6_loopback_is_served() -> None:
    """A lab host on ::1 serves over IPv6."""
    host = LabHost("::1", [LabService("ftp", 0, b"220 v6 FTP server ready", "ftp")])
    with host, socket.create_connection(("::1", host.ports["ftp"]), timeout=5) as sock:
        assert receive_until(sock, b"\n").startswith(b"220 v6")


NMAP = shutil.which("nmap")  # make test installs nmap; a missing one fails the test below


@pytest.mark.nmap
def test_nmap_recognises_the_simulated_voip_adapter(voip: LabHost) -> None:
    """nmap -sV --version-light names telnet, ftp and http, with VoIP products, on their ports."""
    assert NMAP is not None
    ports = voip.ports
    start = time.monotonic()
    completed = subprocess.run(
        [
            NMAP,
            "-n",
            "-Pn",
            "-sV",
            "--version-light",
            "-p",
            ",".join(str(port) for port in ports.values()),
            "-oX",
            "-",
            "--",
            voip.address,
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    # nmap's own XML from a scan of our own loopback service: trusted input.
    report = ElementTree.fromstring(completed.stdout)  # noqa: S314
    found = {
        int(port.get("portid", "0")): (service.get("name"), service.get("product"))
        for port in report.iter("port")
        if (service := port.find("service")) is not None
    }
    assert found == {
        ports["telnet"]: ("telnet", "Lingo VoIP config telnetd"),
        ports["ftp"]: ("ftp", "Netgear broadband router or ZyXel VoIP adapter ftpd"),
        ports["http"]: ("http", "Linksys PAP2 VoIP http config"),
    }
    # About 4.5 s: the NULL probe ends when the silent http/telnet connections are dropped at 4 s.
    assert elapsed < 30

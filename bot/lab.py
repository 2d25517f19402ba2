"""Loopback lab services that imitate real devices, for `portpatrol demo` and the integration tests.

A `LabHost` binds a handful of small TCP services (telnet, ftp, http, smtp, pop3, raw) to one
loopback address and serves them from daemon threads, so the real nmap has something realistic
to find without a single packet leaving the machine. Addresses outside 127.0.0.0/8 and ::1 are
refused: this module must never become a way to listen on, or lure scans towards, a real network.

Pure standard library: it imports nothing from `bot` or `workers`, so any layer (the CLI's demo,
tests, benchmarks) can use it without dragging in the rest of the product.

What nmap 7.93 reports for `voip_adapter()` with `-sV --version-light` (checked on loopback,
both on 23/21/80 as root and on 2323/2121/8080; the scan takes about 4.5 s):

    telnet  "Lingo VoIP config telnetd"                            devicetype "VoIP adapter"
    ftp     "Netgear broadband router or ZyXel VoIP adapter ftpd"  version "1.0"
    http    "Linksys PAP2 VoIP http config"                        devicetype "VoIP adapter"
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import ipaddress
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "KINDS",
    "TELNET_NEGOTIATION",
    "LabHost",
    "LabService",
    "check_loopback",
    "free_loopback_address",
    "voip_adapter",
]

KINDS = frozenset({"telnet", "ftp", "http", "smtp", "pop3", "raw"})

# How long a client that has spoken may then stay quiet: a person poking at the demo by hand.
DEFAULT_IDLE_TIMEOUT = 30.0

# How long a client that has sent nothing at all is kept. nmap's NULL probe listens 6 s for a
# greeting, and for a service that does not speak first (http) or only soft-matches (the Lingo
# telnet) it waits all of it; hanging up earlier ends that wait, which takes -sV against the
# adapter from 6.3 s to about 4 s. It must stay above nmap's tcpwrappedms (3 s), below which nmap
# calls a port that closes silently "tcpwrapped". Telnet clients and browsers send at once, so
# only silent probes (and a slow hand on `nc`) meet this limit.
DEFAULT_SILENT_TIMEOUT = 4.0

# A lab host is a toy: cap the threads a connection flood can create.
MAX_CONNECTIONS = 64

# Longest request line or header we keep reading before giving up on a client.
MAX_LINE = 8192

_STOP_GRACE = 1.0

# How long a closing connection keeps reading what the client still sends, so that closing with
# unread input does not turn into a reset that destroys the reply in flight.
_LINGER = 1.0

DEFAULT_HTTP_SERVER = "thttpd/2.29 23May2018"

# What a telnet service says before its banner unless the banner opens with its own IAC
# commands: DO NEW-ENVIRON, as netkit's telnetd opens. nmap hard-matches that on its first
# (NULL) probe whatever text follows ("Netkit telnet-ssl telnetd"), so it names the service at
# once. The fuller Linux opening (DO TTYPE, TSPEED, XDISPLOC, NEW-ENVIRON) and a bare WILL ECHO
# are only soft matches ("Linux telnetd", "APC PDU/UPS ... telnetd") that send nmap through
# seven more probes, about 30 s against a login prompt that never closes.
TELNET_NEGOTIATION = b"\xff\xfd\x27"
_IAC, _SB, _SE = 0xFF, 0xFA, 0xF0
_WILL, _WONT, _DO, _DONT = 0xFB, 0xFC, 0xFD, 0xFE
_ECHO = 0x01
_TELNET_MAX_ATTEMPTS = 3

_PRIVILEGED_PORTS = {"telnet": 23, "ftp": 21, "http": 80}
_UNPRIVILEGED_PORTS = {"telnet": 2323, "ftp": 2121, "http": 8080}

_claimed_lock = threading.Lock()
# Addresses handed out by free_loopback_address() or held by a running LabHost. Handed-out
# addresses are never handed out again in this process, so two callers cannot race for one.
_claimed: set[str] = set()


@dataclass(frozen=True)
class LabService:
    """One imitation service: what it is called, where it listens and what it says."""

    # What banner is, by kind: telnet - the text after the option negotiation, its last line
    # being the login prompt (a banner that opens with IAC brings its own negotiation); ftp,
    # smtp, pop3 - the greeting line(s), CR LF added if missing; http - the page served at "/";
    # raw - bytes sent exactly as given. port 0 lets the OS pick a free port.
    name: str
    port: int
    banner: bytes
    kind: str
    delay: float = 0.0
    # http only: response headers (Server first, where nmap's matches look for it) and the
    # status of "/". The default Server is one nmap names under --version-light; without a
    # header it knows, nmap reports a plain HTTP server as "unknown" at that intensity.
    headers: tuple[tuple[str, str], ...] = (("Server", DEFAULT_HTTP_SERVER),)
    status: int = 200

    def __post_init__(self) -> None:
        """Refuse a service that could not be served as described."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown lab service kind {self.kind!r}; use one of {sorted(KINDS)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0-65535")
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if not self.name:
            raise ValueError("a lab service needs a name")
        http.HTTPStatus(self.status)  # raises ValueError for a status code HTTP does not define


def check_loopback(address: str) -> str:
    """Return the canonical form of a loopback address, or raise ValueError for anything else."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            f"lab services bind only to a loopback IP address, not {address!r}"
        ) from None
    # ::1 only for IPv6: IPv4-mapped or other IPv6 forms of 127/8 are refused rather than reasoned
    # about, since a mistake here would put an imitation telnet service on a real network.
    is_loopback = (
        parsed in ipaddress.ip_network("127.0.0.0/8")
        if parsed.version == 4
        else parsed == ipaddress.ip_address("::1")
    )
    if not is_loopback:
        raise ValueError(f"lab services bind only to 127.0.0.0/8 or ::1, not {address!r}")
    return str(parsed)


class _Hangup(Exception):
    """The client went away, went quiet for too long, or the host is stopping."""


class _Channel:
    """A client connection with the few operations every imitation service needs."""

    def __init__(self, sock: socket.socket, stopping: threading.Event, idle_timeout: float) -> None:
        self._sock = sock
        self._stopping = stopping
        self._idle_timeout = idle_timeout
        self._heard = False
        self._buffer = bytearray()

    def pause(self, seconds: float) -> None:
        """Wait, but give up at once when the host stops."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Hangup

    def send(self, data: bytes) -> None:
        """Send everything or hang up."""
        try:
            self._sock.sendall(data)
        except OSError:
            raise _Hangup from None

    def receive(self) -> bytes:
        """Return the next bytes the client sent (buffered ones first)."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        try:
            data = self._sock.recv(4096)
        except OSError:  # timeouts and resets alike: the conversation is over
            raise _Hangup from None
        if not data or self._stopping.is_set():
            raise _Hangup
        if not self._heard:
            self._heard = True
            self._sock.settimeout(self._idle_timeout)
        return data

    def read_line(self, plausible: Callable[[bytes], bool] | None = None) -> bytes | None:
        """Return the next line without its CR LF, or None once plausible() rejects its start."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise _Hangup
            if plausible is not None and self._buffer and not plausible(bytes(self._buffer)):
                return None
            chunk = self.receive()
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.removesuffix(b"\r")


def _split_negotiation(greeting: bytes) -> tuple[frozenset[tuple[int, int]], bytes]:
    """Split our own greeting into the options it opens with and the text after them."""
    options: set[tuple[int, int]] = set()
    rest = greeting
    while len(rest) >= 3 and rest[0] == _IAC and rest[1] in (_WILL, _WONT, _DO, _DONT):
        options.add((rest[1], rest[2]))
        rest = rest[3:]
    return frozenset(options), rest


class _TelnetDecoder:
    """Strips telnet commands from client input and turns every line ending into one LF."""

    def __init__(self, offered: frozenset[tuple[int, int]]) -> None:
        self._offered = offered
        self._state = "data"
        self._verb = 0
        self._after_cr = False
        self.replies = bytearray()
        self.subnegotiated = False

    def feed(self, data: bytes) -> bytes:
        """Return the text in data, carrying half-received commands over to the next call."""
        text = bytearray()
        for byte in data:
            if self._state != "data":
                self._command(byte, text)
            elif byte == _IAC:
                self._state, self._after_cr = "iac", False
            elif self._after_cr and byte in (0x0A, 0x00):
                # Telnet ends lines with CR LF or CR NUL, raw-mode clients send a lone CR and
                # netcat a lone LF: each is one Enter key.
                self._after_cr = False
            else:
                self._after_cr = byte == 0x0D
                text.append(0x0A if byte == 0x0D else byte)
        return bytes(text)

    def _command(self, byte: int, text: bytearray) -> None:
        state, self._state = self._state, "data"
        if state == "iac":
            # A verb expects an option byte; IAC IAC is a literal 0xff; the rest are 2 bytes.
            if byte in (_WILL, _WONT, _DO, _DONT):
                self._state, self._verb = "option", byte
            elif byte == _SB:
                # RFC 855 allows subnegotiation only once the server asked for it, and we never
                # do: in practice only nmap's tn3270 probe opens with one.
                self.subnegotiated = True
                self._state = "sb"
            elif byte == _IAC:
                text.append(byte)
        elif state == "option":
            self._answer(self._verb, byte)
        elif not (state == "sb_iac" and byte == _SE):
            self._state = "sb_iac" if byte == _IAC else "sb"

    def _answer(self, verb: int, option: int) -> None:
        # Agreeing to what we offered needs no answer; anything else is declined so a real client
        # stops waiting. WONT and DONT are never answered (RFC 854: no acknowledgement loops).
        if verb == _WILL and (_DO, option) not in self._offered:
            self.replies += bytes((_IAC, _DONT, option))
        elif verb == _DO and (_WILL, option) not in self._offered:
            self.replies += bytes((_IAC, _WONT, option))


class _Login:
    """The login dialogue: user name, password, "Login incorrect", and again."""

    def __init__(self, prompt: bytes, *, echoing: bool) -> None:
        self._prompt = prompt
        self._echoing = echoing
        # After WILL ECHO the client stops echoing, so the end of each line (and the user name)
        # is ours to show; otherwise the client's own echo has already moved the cursor.
        self._newline = b"\r\n" if echoing else b""
        self._asking_password = False
        self._attempts = 0
        self._typed = bytearray()
        self.finished = False

    def press(self, byte: int) -> bytes:
        """Take one typed character and return what the terminal should show for it."""
        if byte == 0x0A:
            return self._enter()
        shown = self._echoing and not self._asking_password
        if byte in (0x08, 0x7F):
            if not self._typed:
                return b""
            self._typed.pop()
            return b"\b \b" if shown else b""
        if 0x20 <= byte < 0x7F and len(self._typed) < 128:
            self._typed.append(byte)
            return bytes((byte,)) if shown else b""
        return b""

    def _enter(self) -> bytes:
        typed = bytes(self._typed).strip()
        self._typed.clear()
        if not self._asking_password:
            # An empty user name just repeats the prompt, as the devices do.
            self._asking_password = bool(typed)
            return self._newline + (b"Password: " if typed else self._prompt)
        self._asking_password = False
        self._attempts += 1
        self.finished = self._attempts >= _TELNET_MAX_ATTEMPTS
        failure = self._newline + b"Login incorrect\r\n\r\n"
        return failure if self.finished else failure + self._prompt


def _serve_telnet(service: LabService, channel: _Channel) -> None:
    """A login prompt that never lets anyone in (and echoes the user name if it offered ECHO)."""
    greeting = service.banner
    if not greeting.startswith(b"\xff"):
        greeting = TELNET_NEGOTIATION + greeting
    offered, text = _split_negotiation(greeting)
    login = _Login(text.rsplit(b"\n", 1)[-1] or b"login: ", echoing=(_WILL, _ECHO) in offered)
    decoder = _TelnetDecoder(offered)
    channel.send(greeting)
    while not login.finished:
        text = decoder.feed(channel.receive())
        out = bytearray(decoder.replies)
        decoder.replies.clear()
        if decoder.subnegotiated:
            # Hanging up on the violation also ends nmap's tn3270 probe (sent first to 2323)
            # at once, instead of letting it wait 5 s for an answer that would never match.
            channel.send(bytes(out))
            return
        for byte in text:
            if not login.finished:
                out += login.press(byte)
        if out:
            channel.send(bytes(out))


_FTP_REPLIES = {
    b"SYST": b"215 UNIX Type: L8\r\n",
    b"FEAT": b"211-Features:\r\n UTF8\r\n211 End\r\n",
    b"HELP": (
        b"214-The following commands are recognized.\r\n"
        b" USER PASS QUIT SYST FEAT HELP NOOP\r\n"
        b"214 Help OK.\r\n"
    ),
    b"NOOP": b"200 NOOP ok.\r\n",
    b"USER": b"331 Please specify the password.\r\n",
    b"PASS": b"530 Login incorrect.\r\n",
}


def _verb(channel: _Channel) -> bytes:
    return (channel.read_line() or b"").split(b" ", 1)[0].upper()


def _ensure_crlf(greeting: bytes) -> bytes:
    return greeting if greeting.endswith(b"\n") else greeting + b"\r\n"


def _serve_ftp(service: LabService, channel: _Channel) -> None:
    """An FTP control connection that greets, chats a little and refuses every login."""
    channel.send(_ensure_crlf(service.banner))
    while True:
        verb = _verb(channel)
        if verb == b"QUIT":
            channel.send(b"221 Goodbye.\r\n")
            return
        channel.send(_FTP_REPLIES.get(verb, b"530 Please login with USER and PASS.\r\n"))


_SMTP_REPLIES = {
    b"HELO": b"250 lab.invalid\r\n",
    b"EHLO": b"250-lab.invalid\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
    b"NOOP": b"250 2.0.0 Ok\r\n",
    b"RSET": b"250 2.0.0 Ok\r\n",
    b"VRFY": b"252 2.0.0 Cannot VRFY user\r\n",
    b"HELP": b"214 2.0.0 Ok\r\n",
    # Never accept mail: a lab host must not look like an open relay to anything.
    b"MAIL": b"554 5.7.1 Relay access denied\r\n",
    b"RCPT": b"554 5.7.1 Relay access denied\r\n",
    b"DATA": b"503 5.5.1 Error: need RCPT command\r\n",
}


def _serve_smtp(service: LabService, channel: _Channel) -> None:
    """An SMTP server that greets and answers the handshake but takes no mail."""
    channel.send(_ensure_crlf(service.banner))
    while True:
        verb = _verb(channel)
        if verb == b"QUIT":
            channel.send(b"221 2.0.0 Bye\r\n")
            return
        channel.send(_SMTP_REPLIES.get(verb, b"502 5.5.2 Error: command not recognized\r\n"))


_POP3_REPLIES = {
    b"CAPA": b"+OK\r\nUSER\r\n.\r\n",
    b"USER": b"+OK\r\n",
    b"PASS": b"-ERR [AUTH] Authentication failed.\r\n",
    b"NOOP": b"+OK\r\n",
}


def _serve_pop3(service: LabService, channel: _Channel) -> None:
    """A POP3 server that greets and refuses every login."""
    channel.send(_ensure_crlf(service.banner))
    while True:
        verb = _verb(channel)
        if verb == b"QUIT":
            channel.send(b"+OK Logging out.\r\n")
            return
        channel.send(_POP3_REPLIES.get(verb, b"-ERR Unknown command.\r\n"))


def _serve_raw(service: LabService, channel: _Channel) -> None:
    """Send the banner bytes untouched, then hang up on whatever comes back."""
    channel.send(service.banner)
    # Hanging up on the first reply (the rest is drained on close) ends each of nmap's probes at
    # once: against a service it cannot name, nmap would otherwise wait out every probe in turn.
    channel.receive()


def _http_response(
    status: int, headers: Sequence[tuple[str, str]], body: bytes, *, include_body: bool = True
) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if include_body else head


def _error_page(status: int) -> bytes:
    phrase = http.HTTPStatus(status).phrase
    page = f"<html><head><title>{status} {phrase}</title></head><body>{phrase}</body></html>\n"
    return page.encode()


def _could_be_request(start: bytes) -> bool:
    method = start.split(b" ", 1)[0].rstrip(b"\r")
    return len(method) <= 20 and all(0x41 <= byte <= 0x5A or byte in b"-_" for byte in method)


def _serve_http(service: LabService, channel: _Channel) -> None:
    """Answer one HTTP request (the banner is the page at "/") and close, as small devices do."""
    # Like real servers, answer 400 as soon as the input cannot be a request line: nmap's binary
    # probes carry no newline and would otherwise each wait 5 s for a reply.
    request_line = channel.read_line(_could_be_request) or b""
    parts = request_line.split(b" ")
    if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
        for _ in range(100):  # headers are read only to get them out of the way
            if not channel.read_line():
                break
    channel.pause(service.delay)
    # Error replies carry the Server header only: a challenge or cookie belongs to the page.
    server = [header for header in service.headers if header[0].lower() == "server"]
    html = ("Content-Type", "text/html")
    allow = ("Allow", "GET, HEAD, OPTIONS")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        channel.send(_http_response(400, [*server, html], _error_page(400)))
        return
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if method == b"OPTIONS":
        channel.send(_http_response(200, [*server, allow], b""))
    elif method not in (b"GET", b"HEAD"):
        channel.send(_http_response(405, [*server, allow, html], _error_page(405)))
    elif target in (b"/", b"/index.html"):
        page_headers = [*service.headers, ("Content-Type", "text/html; charset=utf-8")]
        response = _http_response(
            service.status, page_headers, service.banner, include_body=method == b"GET"
        )
        channel.send(response)
    else:
        response = _http_response(
            404, [*server, html], _error_page(404), include_body=method == b"GET"
        )
        channel.send(response)


_GREETING_FIRST: dict[str, Callable[[LabService, _Channel], None]] = {
    "telnet": _serve_telnet,
    "ftp": _serve_ftp,
    "smtp": _serve_smtp,
    "pop3": _serve_pop3,
    "raw": _serve_raw,
}


def _converse(service: LabService, channel: _Channel) -> None:
    if service.kind == "http":
        _serve_http(service, channel)  # waits for the request first, so its delay comes later
        return
    channel.pause(service.delay)
    _GREETING_FIRST[service.kind](service, channel)


class LabHost:
    """Imitation services on one loopback address, served from daemon threads."""

    def __init__(
        self,
        address: str,
        services: Sequence[LabService],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        silent_timeout: float = DEFAULT_SILENT_TIMEOUT,
    ) -> None:
        self.address = check_loopback(address)
        self.services = tuple(services)
        names = [service.name for service in self.services]
        if len(set(names)) != len(names):
            raise ValueError(f"lab service names must be unique: {names}")
        fixed = [service.port for service in self.services if service.port]
        if len(set(fixed)) != len(fixed):
            raise ValueError(f"two lab services cannot share a port: {fixed}")
        if idle_timeout <= 0 or silent_timeout <= 0:
            raise ValueError("idle_timeout and silent_timeout must be positive")
        self.idle_timeout = idle_timeout
        self.silent_timeout = silent_timeout
        self._family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._running = False
        self._listeners: list[tuple[socket.socket, LabService]] = []
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._acceptor: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._bound: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"LabHost({self.address!r}, ports={self.ports!r})"

    @property
    def ports(self) -> dict[str, int]:
        """Ports by service name: the bound ones once started, the configured ones before."""
        with self._lock:
            bound = dict(self._bound)
        return {service.name: bound.get(service.name, service.port) for service in self.services}

    def __enter__(self) -> LabHost:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind every service and start serving; a second call does nothing."""
        with self._lock:
            if self._running:
                return
            listeners: list[tuple[socket.socket, LabService]] = []
            try:
                for service in self.services:
                    listeners.append((self._listen(service), service))
            except OSError:
                for listener, _ in listeners:
                    listener.close()
                raise
            self._listeners = listeners
            self._bound = {service.name: sock.getsockname()[1] for sock, service in listeners}
            self._stopping = threading.Event()
            self._wake = socket.socketpair()
            self._acceptor = threading.Thread(
                target=self._accept_forever, name=f"lab-{self.address}", daemon=True
            )
            self._running = True
            with _claimed_lock:
                _claimed.add(self.address)
        self._acceptor.start()

    def stop(self) -> None:
        """Close every socket and join the threads (within about a second); idempotent."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            # Shutting a connection down wakes its thread out of recv() at once.
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already reset by the client
                    connection.shutdown(socket.SHUT_RDWR)
            acceptor, wake, listeners = self._acceptor, self._wake, self._listeners
            self._acceptor, self._wake, self._listeners = None, None, []
        deadline = time.monotonic() + _STOP_GRACE
        if wake is not None:
            with contextlib.suppress(OSError):  # the acceptor is gone already
                wake[1].send(b"\0")
        if acceptor is not None:
            acceptor.join(max(0.0, deadline - time.monotonic()))
        for listener, _ in listeners:
            listener.close()
        if wake is not None:
            wake[0].close()
            wake[1].close()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _listen(self, service: LabService) -> socket.socket:
        listener = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            # Tests restart lab hosts on fixed ports; connections left in TIME_WAIT must not
            # keep the next run from binding.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.address, service.port))
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    def _accept_forever(self) -> None:
        wake = self._wake
        if wake is None:
            return
        with selectors.DefaultSelector() as selector:
            selector.register(wake[0], selectors.EVENT_READ, None)
            for listener, service in self._listeners:
                selector.register(listener, selectors.EVENT_READ, (listener, service))
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.data is None:
                        return
                    self._accept(*key.data)

    def _accept(self, listener: socket.socket, service: LabService) -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return  # the client gave up between select() and accept()
        with self._lock:
            if self._stopping.is_set() or len(self._connections) >= MAX_CONNECTIONS:
                connection.close()
                return
            connection.settimeout(self.silent_timeout)
            self._connections.add(connection)
            worker = threading.Thread(
                target=self._handle,
                args=(connection, service),
                name=f"lab-{self.address}-{service.name}",
                daemon=True,
            )
            self._workers.add(worker)
        worker.start()

    def _handle(self, connection: socket.socket, service: LabService) -> None:
        try:
            _converse(service, _Channel(connection, self._stopping, self.idle_timeout))
        except _Hangup:
            pass  # every conversation ends this way sooner or later
        finally:
            self._linger(connection)
            with self._lock:
                self._connections.discard(connection)
                self._workers.discard(threading.current_thread())
                connection.close()

    def _linger(self, connection: socket.socket) -> None:
        # Send FIN first and read until the client closes too: closing a socket with unread
        # input sends a reset, which can destroy the reply the client has not read yet.
        deadline = time.monotonic() + _LINGER
        try:
            connection.shutdown(socket.SHUT_WR)
            connection.settimeout(0.1)
            while time.monotonic() < deadline and not self._stopping.is_set():
                try:
                    if not connection.recv(4096):
                        return
                except TimeoutError:
                    continue
        except OSError:
            return  # the client reset or left already


def free_loopback_address() -> str:
    """Return a 127.100.x.y address that no other LabHost in this process has used."""
    for _ in range(1000):
        # Not a secret: random only spreads parallel test runs across the /16.
        candidate = f"127.100.{random.randrange(256)}.{random.randrange(1, 255)}"  # noqa: S311
        with _claimed_lock:
            if candidate in _claimed:
                continue
            try:
                # Linux answers on all of 127/8, other systems only on configured addresses.
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind((candidate, 0))
            except OSError:
                continue
            _claimed.add(candidate)
            return candidate
    raise RuntimeError("no free loopback address in 127.100.0.0/16")


# IAC WILL ECHO and a bare "Login: ": what Lingo-provisioned adapters send. nmap's fingerprint
# for them (a GenericLines match, "Lingo VoIP config telnetd") needs nothing else before the
# prompt, so device text here would cost the product name.
_LINGO_TELNET_BANNER = b"\xff\xfb\x01Login: "

# Fingerprint of a ZyXEL-made VoIP adapter's ftpd (nmap: "... ZyXel VoIP adapter ftpd", NULL probe
# hard match, so nmap names it without waiting). The two spaces and the 1970 clock are the device's.
_VOIP_FTP_BANNER = b"220  FTP version 1.0 ready at Thu Jan  1 00:00:00 1970\r\n"

_PAP2_PAGE = b"""<!DOCTYPE html>
<html>
<head>
<title>Linksys PAP2 Configuration</title>
</head>
<body>
<h1>Linksys PAP2 / Lingo VoIP adapter</h1>
<form method="post" action="/login">
<p><label>User name <input name="username" autocomplete="off"></label></p>
<p><label>Password <input name="password" type="password"></label></p>
<p><input type="submit" value="Log in"></p>
</form>
<p>Provisioned by your VoIP provider. Firmware 5.1.6(LS)</p>
</body>
</html>
"""

# The PAP2 asks for digest credentials even for its start page. nmap's fingerprint keys on this
# challenge (two spaces after "Digest" included) plus the page title.
_PAP2_HEADERS = (
    ("Server", "Linksys PAP2"),
    (
        "WWW-Authenticate",
        'Digest  realm="pap user", domain="/", nonce="6c6162706170322e", qop="auth", algorithm=MD5',
    ),
)


def voip_adapter(address: str = "127.0.0.23", *, privileged: bool | None = None) -> LabHost:
    """Build (not start) the origin story's VoIP adapter: telnet, FTP and an HTTP admin page."""
    if privileged is None:
        privileged = hasattr(os, "geteuid") and os.geteuid() == 0
    ports = _PRIVILEGED_PORTS if privileged else _UNPRIVILEGED_PORTS
    return LabHost(
        address,
        [
            LabService("telnet", ports["telnet"], _LINGO_TELNET_BANNER, "telnet"),
            LabService("ftp", ports["ftp"], _VOIP_FTP_BANNER, "ftp"),
            LabService(
                "http", ports["http"], _PAP2_PAGE, "http", headers=_PAP2_HEADERS, status=401
            ),
        ],
    )

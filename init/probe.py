"""--validate: prove that interception works, the way Istio's validation init container does.

Inside the target namespace a validation listener binds the outbound proxy port (free at init time:
the proxy has not started yet), and a client that is not the proxy uid connects to an address
outside the pod: 192.0.2.1 (TEST-NET-1, RFC 5737, never a real peer) on a port that is not ignored.
Interception works when that connection lands on the listener and SO_ORIGINAL_DST there names
192.0.2.1 and the port. When it does not, the SYN goes wherever the pod routes it and nobody
answers: the client times out and we report that the rules do not intercept.

IPv4 only: the IPv6 pass uses the same planner and rules (proved by the kernel tests).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from kernsplit.agent.netns import entered
from kernsplit.init.config import InitConfig

VALIDATION_ADDRESS = "192.0.2.1"
SO_ORIGINAL_DST = 80          # linux/netfilter_ipv4.h
FIRST_PROBE_PORT = 15002      # Istio's probe port; any port not excluded would do


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    message: str


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """The destination the peer asked for before REDIRECT rewrote it (struct sockaddr_in)."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack_from("!2xH4s", raw)
    return str(ipaddress.IPv4Address(addr)), port


def probe_port(cfg: InitConfig) -> int:
    port = FIRST_PROBE_PORT
    while any(port in r for r in cfg.outbound_ports_to_ignore) or port == cfg.outgoing_proxy_port:
        port += 1
    return port


def _excluded_identity(cfg: InitConfig) -> str | None:
    if cfg.proxy_uid is not None and os.geteuid() == cfg.proxy_uid:
        return f"uid {cfg.proxy_uid}"
    if cfg.proxy_gid is not None and cfg.proxy_gid in (os.getegid(), *os.getgroups()):
        return f"gid {cfg.proxy_gid}"
    return None


def validate(cfg: InitConfig, timeout: float = 1.0) -> ValidationResult:
    identity = _excluded_identity(cfg)
    if identity is not None:
        return ValidationResult(False, f"cannot validate: this process runs as the proxy's {identity}, "
                                       "whose traffic is deliberately not intercepted")
    if any(ipaddress.ip_address(VALIDATION_ADDRESS) in net for net in cfg.subnets(4)):
        return ValidationResult(False, f"cannot validate: {VALIDATION_ADDRESS} is inside --subnets-to-ignore, "
                                       "so its connections are deliberately not intercepted")
    port = probe_port(cfg)
    target = f"{VALIDATION_ADDRESS}:{port}"
    with entered(cfg.netns):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("0.0.0.0", cfg.outgoing_proxy_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return ValidationResult(False, f"cannot validate: port {cfg.outgoing_proxy_port} is already in "
                                               "use in the namespace (run --validate before the proxy starts)")
            raise
        server.listen(1)
        server.settimeout(timeout)
        client.settimeout(timeout)
        try:
            client.connect((VALIDATION_ADDRESS, port))
        except OSError as exc:
            return ValidationResult(False, f"interception not working: connecting to {target} did not reach the "
                                           f"validation listener on port {cfg.outgoing_proxy_port} "
                                           f"({exc.strerror or exc})")
        try:
            conn, _ = server.accept()
        except socket.timeout:
            return ValidationResult(False, f"interception not working: a connection to {target} was accepted by "
                                           f"something other than the listener on port {cfg.outgoing_proxy_port}")
        with conn:
            got = original_dst(conn)
        if got != (VALIDATION_ADDRESS, port):
            return ValidationResult(False, f"interception not working: SO_ORIGINAL_DST says {got[0]}:{got[1]}, "
                                           f"expected {target}")
        return ValidationResult(True, f"validated: a connection to {target} was redirected to port "
                                      f"{cfg.outgoing_proxy_port} and SO_ORIGINAL_DST reads {target}")

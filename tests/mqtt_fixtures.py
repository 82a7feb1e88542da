"""Fixtures for the messaging tests: a real Mosquitto broker on a free loopback port, and a
device (a paho-mqtt client) that publishes readings and collects what it receives.

``scripts/services.sh`` installs Mosquitto (Debian's package) when it is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest
from deploy_fixtures import free_port, wait_port


def _pem(path: str, obj: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "public_bytes"):
        data = obj.public_bytes(serialization.Encoding.PEM)
    else:
        data = obj.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    with open(path, "wb") as fh:
        fh.write(data)
    return path


class MadeCA:
    """A certificate authority made for one test (``cryptography``): signs the broker's
    certificate and clients' certificates (mutual TLS)."""

    def __init__(self, directory: str, name: str = "pyengine test CA") -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(minutes=5))
                .not_valid_after(self.now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        slug = name.replace(" ", "-")
        self.pem = _pem(os.path.join(directory, f"{slug}.pem"), cert)

    def issue(self, common_name: str, server: bool = False) -> tuple[str, str]:
        """A certificate for ``common_name`` (for 127.0.0.1 when ``server``): (cert, key)."""
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
             .issuer_name(self.name).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(self.now - datetime.timedelta(minutes=5))
             .not_valid_after(self.now + datetime.timedelta(days=1)))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return (_pem(os.path.join(self.directory, f"{common_name}.pem"), cert),
                _pem(os.path.join(self.directory, f"{common_name}.key"), key))


def make_certificates(directory: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, key)."""
    ca = MadeCA(directory)
    cert, key = ca.issue("127.0.0.1", server=True)
    return ca.pem, cert, key


def mosquitto_binary(name: str = "mosquitto") -> str:
    """The broker's executable (or another of its package's); fails (never skips) with how to
    install it."""
    exe = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/sbin/{name}")
         if os.path.exists(p)), None)
    if exe is None:
        pytest.fail("mosquitto is not installed: run scripts/services.sh "
                    "(apt-get install -y mosquitto)")
    return exe


def password_file(directory: str, users: dict[str, str]) -> str:
    """``directory``/passwd: a Mosquitto password file (hashed by mosquitto_passwd)."""
    passwd = os.path.join(directory, "passwd")
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([mosquitto_binary("mosquitto_passwd"), "-b",
                        *(["-c"] if i == 0 else []), passwd, user, password],
                       check=True, capture_output=True)
    os.chmod(passwd, 0o600)
    return passwd


class Mosquitto:
    """A Mosquitto process on 127.0.0.1:``port`` with a generated configuration.

    ``stop()`` and ``start()`` again keep the port (a broker restart as devices see it).
    """

    def __init__(self, port: int | None = None, tls: bool = False,
                 users: dict[str, str] | None = None,
                 listeners: list[str] | None = None, directory: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = directory or tempfile.mkdtemp(prefix="pyengine-mosquitto-")
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        if listeners is not None:  # the caller's own listeners and authentication
            lines = list(listeners)
        else:
            lines = [f"listener {self.port} 127.0.0.1"]
            if tls:
                self.ca, cert, key = make_certificates(self.dir)
                lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
            if users:
                lines += ["allow_anonymous false",
                          f"password_file {password_file(self.dir, users)}"]
            else:
                lines.append("allow_anonymous true")
        lines += [
            "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        with open(self.conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the broker (again) on the same port; returns once it accepts connections."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the broker runs
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", self.conf], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.port, timeout=20)
        except OSError:
            self.stop()
            raise RuntimeError(
                f"mosquitto did not start on port {self.port}:\n{self.log()}") from None

    def stop(self) -> None:
        """Stop the broker (its sessions and queued messages are gone: persistence is off)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A broker of the test's own (tests that restart it need their own anyway)."""
    broker = Mosquitto()
    yield broker
    broker.close()


class Device:
    """A device: a paho client that subscribes to ``topics`` and keeps every message it gets."""

    def __init__(self, port: int, topics: list[str], client_id: str = "",
                 ca: str | None = None, auth: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"device-{time.monotonic_ns()}")
        self.client.max_inflight_messages_set(100)
        if ca:
            self.client.tls_set(ca_certs=ca)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.max_queued_messages_set(0)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: self._connected(c, topics)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(20), f"the device could not subscribe to {topics}"

    @staticmethod
    def _connected(client: Any, topics: list[str]) -> None:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(t, 1) for t in topics])

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> Any:
        return self.client.publish(topic, payload, qos=qos)

    def wait_for(self, n: int, timeout: float = 60.0) -> list[tuple[str, bytes]]:
        """Wait until ``n`` messages arrived (or the timeout); every message so far."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n and time.monotonic() < deadline:
                self.cond.wait(min(0.5, max(0.01, deadline - time.monotonic())))
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

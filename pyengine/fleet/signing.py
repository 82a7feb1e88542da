"""Ed25519 keys and signed envelopes for fleet deployment documents.

A signed document is stored as an *envelope*::

    {"format": "pyengine-fleet-signed/1", "key_id": "<16 hex>",
     "payload": "<base64 of the document's canonical JSON bytes>",
     "signature": "<base64 Ed25519 signature of those bytes>"}

:func:`open_envelope` checks the signature over the exact payload bytes *before* parsing them, so
nothing an attacker wrote into the bucket is interpreted unless a trusted key signed it.
The ``cryptography`` package is imported lazily (``pip install 'pyengine[fleet]'``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

ENVELOPE_FORMAT = "pyengine-fleet-signed/1"


class SignatureError(ValueError):
    """A document that is unsigned, signed by an untrusted key, or altered after signing."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ImportError(
            f"fleet signing needs the cryptography package, which is not importable ({exc}); "
            "install it with: pip install 'pyengine[fleet]'"
        ) from None
    return ed25519


def canonical(doc: Any) -> bytes:
    """The bytes that are signed: JSON with sorted keys and no insignificant whitespace."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public_raw: bytes) -> str:
    """A short fingerprint of a raw 32-byte public key (shown in messages and statuses)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def keygen(private_path: str, public_path: str | None = None, overwrite: bool = False) -> str:
    """Make an Ed25519 key pair: ``private_path`` (PEM, mode 0600) and its public key.

    Parameters
    ----------
    private_path
        Where the private key goes (it signs documents with ``pyengine fleet publish --key``).
    public_path
        Where the public key goes (cores trust it with ``--trust``); ``<private_path>.pub``
        by default.
    overwrite
        Replace existing files (refused otherwise: a lost key cannot be recovered).

    Returns
    -------
    str
        The key id (fingerprint of the public key).
    """
    from cryptography.hazmat.primitives import serialization

    ed = _crypto()
    public_path = public_path or f"{private_path}.pub"
    for p in (private_path, public_path):
        if os.path.exists(p) and not overwrite:
            raise FileExistsError(f"{p} exists; refusing to overwrite a key (pass --force)")
    priv = ed.Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    with open(public_path, "wb") as fh:
        fh.write(pub)
    return key_id(_raw_public(priv.public_key()))


def _raw_public(pub: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


class SigningKey:
    """An Ed25519 private key read from a PEM file."""

    def __init__(self, path: str) -> None:
        from cryptography.hazmat.primitives import serialization

        ed = _crypto()
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise OSError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{path} is not an unencrypted PEM private key ({exc}); make one with "
                "`pyengine fleet keygen`"
            ) from None
        if not isinstance(key, ed.Ed25519PrivateKey):
            raise ValueError(
                f"{path} holds a {type(key).__name__}, not an Ed25519 key; make one with "
                "`pyengine fleet keygen`"
            )
        self.path = path
        self._key = key
        self.public = TrustedKey.from_raw(_raw_public(key.public_key()))

    def seal(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The signed envelope of ``doc``."""
        payload = canonical(doc)
        return {
            "format": ENVELOPE_FORMAT,
            "key_id": self.public.id,
            "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(self._key.sign(payload)).decode(),
        }


class TrustedKey:
    """An Ed25519 public key a core trusts."""

    def __init__(self, key: Any, raw: bytes, source: str) -> None:
        self._key = key
        self.raw = raw
        self.id = key_id(raw)
        self.source = source

    @staticmethod
    def from_raw(raw: bytes, source: str = "<raw>") -> TrustedKey:
        ed = _crypto()
        return TrustedKey(ed.Ed25519PublicKey.from_public_bytes(raw), raw, source)

    @staticmethod
    def load(path: str) -> TrustedKey:
        """Read a public key: PEM (what ``pyengine fleet keygen`` writes) or 32 raw bytes in hex
        or base64."""
        from cryptography.hazmat.primitives import serialization

        ed = _crypto()
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise OSError(f"cannot read the trusted key {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN" in data:
            try:
                key = serialization.load_pem_public_key(data)
            except ValueError as exc:
                raise ValueError(f"{path} is not a PEM public key ({exc})") from None
            if not isinstance(key, ed.Ed25519PublicKey):
                raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
            return TrustedKey(key, _raw_public(key), path)
        text = data.strip()
        raw = b""
        try:
            raw = bytes.fromhex(text.decode()) if len(text) == 64 else base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                f"{path} is not an Ed25519 public key: expected a PEM file from "
                "`pyengine fleet keygen` (or 32 bytes in hex or base64)"
            )
        return TrustedKey.from_raw(raw, path)

    def verify(self, payload: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(signature, payload)
            return True
        except InvalidSignature:
            return False


def open_envelope(data: bytes, trusted: list[TrustedKey]) -> tuple[dict[str, Any], str]:
    """Check a signed envelope and return (the document, the id of the key that signed it).

    The signature is checked over the exact payload bytes before they are parsed.

    Raises
    ------
    SignatureError
        Unsigned, unparseable, signed by a key not in ``trusted``, or altered after signing.
    """
    if not trusted:
        raise SignatureError("no trusted key configured; every document is refused")
    try:
        env = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SignatureError(f"not a signed document: not JSON ({exc})") from None
    if not isinstance(env, dict) or env.get("format") != ENVELOPE_FORMAT:
        raise SignatureError(
            f"unsigned document: expected a {ENVELOPE_FORMAT!r} envelope with a payload and "
            f"an Ed25519 signature, got {type(env).__name__} with fields "
            f"{sorted(env) if isinstance(env, dict) else '-'}"
        )
    payload_b64, sig_b64 = env.get("payload"), env.get("signature")
    if not isinstance(payload_b64, str) or not isinstance(sig_b64, str) or not sig_b64:
        raise SignatureError("unsigned document: the envelope has no payload or no signature")
    try:
        payload = base64.b64decode(payload_b64, validate=True)
        sig = base64.b64decode(sig_b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"damaged envelope: payload or signature is not base64 ({exc})") \
            from None
    for k in trusted:
        if k.verify(payload, sig):
            try:
                doc = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SignatureError(f"signed payload is not JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise SignatureError("signed payload is not a JSON object")
            return doc, k.id
    claimed = env.get("key_id")
    known = ", ".join(k.id for k in trusted)
    if claimed in {k.id for k in trusted}:
        raise SignatureError(
            f"bad signature: the document claims trusted key {claimed} but its signature does "
            "not match its contents (altered after signing?)"
        )
    raise SignatureError(
        f"signed by an untrusted key ({claimed!r}); this core trusts {known}"
    )

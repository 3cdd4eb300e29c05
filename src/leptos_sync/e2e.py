"""Optional end-to-end encryption of a collection's operations.

A collection whose name starts with :data:`E2E_PREFIX` (``"e2e:"``) can be
encrypted with a key the server never sees. Each operation's update bytes
travel and are stored on the server as ``nonce (12 bytes) || AES-256-GCM
ciphertext``; the associated data binds the ciphertext to its place::

    aad = b"leptos-sync e2e v1\\0" + collection (utf-8) + b"\\0"
          + replica (8 bytes, big-endian) + counter (8 bytes, big-endian)

so an operation replayed under another replica id or counter, or moved to
another collection, or with a single byte changed, fails to decrypt and is
refused by the receiving replica (counted as an integrity failure).

The key is derived with scrypt from a passphrase and a per-collection salt
(by default a hash of the collection name, so that every replica derives the
same key with no coordination; pass an explicit random salt, distributed with
the passphrase, to stop precomputation across deployments).

The trade-off: the hub cannot read these operations, so it cannot validate
them, build snapshots or compact them. A replica joining late replays the
whole log, and a malformed operation is only noticed by the replicas. The hub
recognises such collections by their name prefix alone. The local store on
each device keeps plaintext: the device is trusted, the server is not.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigError, IntegrityError

__all__ = ["E2E_PREFIX", "OpCipher", "is_encrypted"]

E2E_PREFIX = "e2e:"
_NONCE = 12
_CONTEXT = b"leptos-sync e2e v1\0"


def is_encrypted(collection: str) -> bool:
    """Whether ``collection`` is end-to-end encrypted (by its name prefix)."""
    return collection.startswith(E2E_PREFIX)


class OpCipher:
    """Seals and opens the operations of one collection with AES-256-GCM.

    Args:
        key: 32 bytes; see :meth:`from_passphrase`.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("key", "an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)
        self.sealed = self.opened = self.refused = 0

    def __repr__(self) -> str:
        return "OpCipher(key='***')"

    @classmethod
    def from_passphrase(
        cls,
        passphrase: str,
        collection: str,
        *,
        salt: bytes | None = None,
        n: int = 2**15,
        r: int = 8,
        p: int = 1,
    ) -> OpCipher:
        """Derive the key with scrypt (N=2^15, r=8, p=1: about 32 MiB, ~0.1 s)."""
        if not passphrase:
            raise ConfigError("passphrase", "must not be empty")
        if salt is None:
            salt = hashlib.sha256(_CONTEXT + collection.encode()).digest()[:16]
        key = hashlib.scrypt(
            passphrase.encode(),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=128 * r * n * 2,
            dklen=32,
        )
        return cls(key)

    def seal(self, collection: str, replica: int, counter: int, data: bytes) -> bytes:
        """``nonce || ciphertext`` of ``data`` for operation ``(replica, counter)``."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, data, _aad(collection, replica, counter))
        self.sealed += 1
        return nonce + sealed

    def open(self, collection: str, replica: int, counter: int, blob: bytes) -> bytes:
        """The plaintext of a sealed operation.

        Raises:
            IntegrityError: the bytes were changed, or belong to another
                operation, collection or key.
        """
        if len(blob) < _NONCE + 16:
            self.refused += 1
            raise IntegrityError(f"encrypted op {replica:x}/{counter} is truncated")
        try:
            data = self._aead.decrypt(
                blob[:_NONCE], blob[_NONCE:], _aad(collection, replica, counter)
            )
        except InvalidTag:
            self.refused += 1
            raise IntegrityError(
                f"encrypted op {replica:x}/{counter} of {collection!r} fails "
                "authentication (tampered, replayed, or another key)"
            ) from None
        self.opened += 1
        return data


def _aad(collection: str, replica: int, counter: int) -> bytes:
    return (
        _CONTEXT
        + collection.encode()
        + b"\0"
        + replica.to_bytes(8, "big")
        + counter.to_bytes(8, "big")
    )

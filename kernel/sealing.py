"""Secrets the service must use again later (webhook signing keys) are stored encrypted, not in plain text.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under a key derived from `PLACECAST_SECRET_KEY` with
HKDF-SHA256, so a copy of the database (a backup, a replica, a leaked dump) does not hand out the keys that let
anyone sign requests as Placecast. Values written before sealing existed have no prefix and are read as they are
(migration 0004 seals them). Changing `PLACECAST_SECRET_KEY` makes sealed values unreadable: webhooks would then
fail with a clear error and their subscriptions need new secrets.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "fernet:"


class SealError(Exception):
    pass


class Sealer:
    def __init__(self, secret_key: str, purpose: bytes = b"placecast webhook secrets") -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before sealing existed
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken as error:
            raise SealError("cannot open a sealed secret: was PLACECAST_SECRET_KEY changed?") from error

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(PREFIX)

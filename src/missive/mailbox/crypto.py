"""All of Missive's cryptography at rest (SPEC §3, C1–C7). No other module encrypts.

Layers, from the outside in:

- **Master key** (32 random bytes) lives outside the database: a key file with mode 0600
  (``DIR/keys/master.key``, base64) or the ``MISSIVE_STORE__MASTER_KEY`` variable. It wraps the
  per-mailbox key-encryption keys (KEKs) of the key store (``mailbox.keystore``), which is kept
  outside the mail database. Rotation re-wraps the KEKs; messages are never re-encrypted (C4).
- **KEK** per mailbox wraps that mailbox's private key (AES-256-GCM, AAD = SHA-256 of the
  mailbox public key, so a wrapped key cannot be swapped onto another mailbox). Destroying the
  KEK when a mailbox is closed is the crypto-shredding of C3, effective for old backups too.
- **Mailbox key pair** per mailbox (C3), HPKE (RFC 9180) through
  ``cryptography.hazmat.primitives.hpke``. Default suite: ML-KEM-768 + X25519 hybrid KEM,
  HKDF-SHA256, AES-256-GCM (C5: health data is kept for decades; a hybrid KEM resists "harvest
  now, decrypt later"). Public keys are stored in clear so that the SMTP process, which never has
  the master key, can seal (C2).
- **Data key** per stored message: 32 random bytes sealed to the mailbox public key with HPKE
  single-shot encryption (RFC 9180 §6.1), then AES-256-GCM over the message body and, separately,
  its metadata. Every sealed record names its suite, so new suites need no migration.
- **Key cache** per mailbox: once an opened session has decapsulated a message's data key, it
  stores that data key wrapped (AES-256-GCM) under a symmetric *cache key* derived with HKDF
  from the mailbox private key, so later sessions open it with one AES-GCM instead of one
  ML-KEM + X25519 decapsulation (≈0.16 ms each, the bound of a first ``FETCH 1:* ENVELOPE``
  and of an inbox page). Only a holder of the private key can derive the cache key: the
  owner's or a delegate's opened session (C6). Closing the mailbox destroys the private key,
  hence the cache key (C3); the cache is symmetric, so it is as post-quantum as the rest (C5).
  Delivery never writes it (the SMTP process has no private key, C2). Items a reading front
  computes from a message (IMAP ENVELOPE, BODYSTRUCTURE) are kept sealed under the same key
  (``content.derived``), so a later session serves them without decrypting and parsing.
- **Index key** (``DIR/keys/index.key``): an HMAC-SHA256 key for keyed hashes of relations
  (which professional wrote to which patient, conversation identifiers; C7). It opens nothing.

Implementation notes: nonces are random 96-bit values under keys used for a handful of
encryptions each (one data key per message), far below the GCM birthday bound. Private key
material is only ever held in memory by an opened mailbox session (C6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from missive.errors import KeyStoreUnavailable, MissiveError

HYBRID = "MLKEM768X25519-SHA256-AES256GCM"
CLASSIC = "X25519-SHA256-AES256GCM"
SUITES = (HYBRID, CLASSIC)

_NONCE = 12
_KEY = 32
_INFO = b"missive/data-key/v1"
_CACHE_INFO = b"missive/key-cache/v1"
_WRAP_AAD = b"missive/key-wrap/v1/"
_MLKEM_SEED = 64
_MLKEM_PUB = 1184
_X25519 = 32


class CryptoError(MissiveError):
    """A sealed record could not be opened (wrong key, tampering, destroyed key)."""


def _suite(name: str) -> hpke.Suite:
    if name == HYBRID:
        return hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    if name == CLASSIC:
        return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    raise CryptoError(f"unknown suite {name!r}")


# --- mailbox key pairs ------------------------------------------------------------------------

@dataclass(frozen=True)
class PublicKey:
    """A mailbox public key as stored: suite name and raw bytes."""

    suite: str
    raw: bytes

    @cached_property
    def _key(self) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
        return self._hpke()

    def _hpke(self) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
        if self.suite == HYBRID:
            if len(self.raw) != _MLKEM_PUB + _X25519:
                raise CryptoError("malformed hybrid public key")
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:_MLKEM_PUB]),
                x25519.X25519PublicKey.from_public_bytes(self.raw[_MLKEM_PUB:]),
            )
        return x25519.X25519PublicKey.from_public_bytes(self.raw)

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.suite.encode() + b"\0" + self.raw).digest()


@dataclass(frozen=True)
class PrivateKey:
    """An unwrapped mailbox private key: in memory only, inside an opened session (C6)."""

    suite: str
    raw: bytes = field(repr=False)

    @cached_property
    def _key(self) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
        # Expanding the ML-KEM seed costs more than a decapsulation: once per opened session.
        return self._hpke()

    def _hpke(self) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
        if self.suite == HYBRID:
            return hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:_MLKEM_SEED]),
                x25519.X25519PrivateKey.from_private_bytes(self.raw[_MLKEM_SEED:]),
            )
        return x25519.X25519PrivateKey.from_private_bytes(self.raw)


def generate_keypair(suite: str = HYBRID) -> tuple[PublicKey, PrivateKey]:
    """A fresh mailbox key pair. The hybrid private key is persisted as the ML-KEM seed and the
    X25519 scalar, from which ``hpke.MLKEM768X25519PrivateKey`` is rebuilt."""
    xk = x25519.X25519PrivateKey.generate()
    if suite == HYBRID:
        mk = mlkem.MLKEM768PrivateKey.generate()
        pub = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        secret = mk.private_bytes_raw() + xk.private_bytes_raw()
        return PublicKey(suite, pub), PrivateKey(suite, secret)
    if suite == CLASSIC:
        return (PublicKey(suite, xk.public_key().public_bytes_raw()),
                PrivateKey(suite, xk.private_bytes_raw()))
    raise CryptoError(f"unknown suite {suite!r}")


# --- master key and key wrapping --------------------------------------------------------------

@dataclass(frozen=True)
class MasterKey:
    key: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"missive/master-key-id/" + self.key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(_KEY))

    def encode(self) -> str:
        return base64.b64encode(self.key).decode()

    @classmethod
    def decode(cls, text: str) -> MasterKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise KeyStoreUnavailable("master key is not valid base64") from None
        if len(raw) != _KEY:
            raise KeyStoreUnavailable(f"master key must be {_KEY} bytes, got {len(raw)}")
        return cls(raw)


def wrap_secret(master: MasterKey, secret: bytes, context: bytes) -> bytes:
    """AES-256-GCM key wrapping; ``context`` (AAD) binds the wrapped key to its owner."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(master.key).encrypt(nonce, secret, _WRAP_AAD + context)


def unwrap_secret(master: MasterKey, wrapped: bytes, context: bytes) -> bytes:
    try:
        return AESGCM(master.key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                          _WRAP_AAD + context)
    except InvalidTag:
        raise CryptoError("this key does not open that wrapped key") from None


def wrap_private_key(kek: bytes, public: PublicKey, private: PrivateKey) -> bytes:
    """Wrap a mailbox private key under its KEK, bound to the mailbox public key."""
    return wrap_secret(MasterKey(kek), private.raw, public.fingerprint)


def unwrap_private_key(kek: bytes, public: PublicKey, wrapped: bytes) -> PrivateKey:
    return PrivateKey(public.suite, unwrap_secret(MasterKey(kek), wrapped, public.fingerprint))


def write_key_file(path: Path, text: str) -> None:
    """Create a key file with mode 0600 atomically (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_key_file(path: Path) -> str:
    """Read a key file, refusing one that group or others can read (C4)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyStoreUnavailable(f"key file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreUnavailable(
            f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return path.read_text()


# --- sealing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SealedKey:
    """A data key sealed to one mailbox: ``suite`` and the HPKE output ``enc || ct``."""

    suite: str
    blob: bytes


def new_data_key() -> bytes:
    return os.urandom(_KEY)


def seal_data_key(public: PublicKey, data_key: bytes) -> SealedKey:
    return SealedKey(public.suite, _suite(public.suite).encrypt(data_key, public._key, _INFO))


def open_data_key(private: PrivateKey, sealed: SealedKey) -> bytes:
    if sealed.suite != private.suite:
        raise CryptoError("record sealed with another suite than the mailbox key")
    try:
        return _suite(sealed.suite).decrypt(sealed.blob, private._key, _INFO)
    except Exception as exc:  # the binding raises several types for a bad ciphertext
        raise CryptoError("data key does not open with this mailbox key") from exc


def encrypt(data_key: bytes, plaintext: bytes, label: bytes) -> bytes:
    """AES-256-GCM with a random nonce; ``label`` (AAD) keeps body and metadata apart."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, label)


def decrypt(data_key: bytes, blob: bytes, label: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(blob[:_NONCE], blob[_NONCE:], label)
    except InvalidTag:
        raise CryptoError("sealed record was altered or belongs elsewhere") from None


# --- the key cache of a mailbox -----------------------------------------------------------------

def derive_cache_key(private: PrivateKey) -> bytes:
    """The mailbox's symmetric cache key (HKDF-SHA256, RFC 5869), from its private key only."""
    return HKDF(hashes.SHA256(), _KEY, salt=None, info=_CACHE_INFO).derive(private.raw)


def _cache_label(mailbox_id: int, sealed: SealedKey) -> bytes:
    # Bound to the mailbox and to the sealed data key it stands for: a cached key copied onto
    # another row or mailbox does not open.
    return (_CACHE_INFO + b"/" + str(mailbox_id).encode() + b"/"
            + hashlib.sha256(sealed.blob).digest()[:16])


def wrap_cached_key(cache_key: bytes, mailbox_id: int, sealed: SealedKey,
                    data_key: bytes) -> bytes:
    return encrypt(cache_key, data_key, _cache_label(mailbox_id, sealed))


def unwrap_cached_key(cache_key: bytes, mailbox_id: int, sealed: SealedKey,
                      blob: bytes) -> bytes:
    """The data key from its cached wrapping; :class:`CryptoError` if it does not open."""
    return decrypt(cache_key, blob, _cache_label(mailbox_id, sealed))


def _derived_label(mailbox_id: int, content_id: int) -> bytes:
    return b"missive/derived/v1/%d/%d" % (mailbox_id, content_id)


def seal_derived(cache_key: bytes, mailbox_id: int, content_id: int, data: bytes) -> bytes:
    """Seal what a reading front computed from a message (IMAP ENVELOPE, BODYSTRUCTURE) under
    the mailbox's cache key, bound to the mailbox and the content row."""
    return encrypt(cache_key, data, _derived_label(mailbox_id, content_id))


def open_derived(cache_key: bytes, mailbox_id: int, content_id: int, blob: bytes) -> bytes:
    return decrypt(cache_key, blob, _derived_label(mailbox_id, content_id))


# --- keyed hashes (C7) --------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexKey:
    key: bytes = field(repr=False)

    def digest(self, purpose: str, *parts: str | int) -> str:
        """HMAC-SHA256 over a purpose label and parts; hex, 32 chars (128 bits)."""
        mac = hmac.new(self.key, purpose.encode(), hashlib.sha256)
        for part in parts:
            data = str(part).encode()
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.hexdigest()[:32]


# --- the key ring of a process ----------------------------------------------------------------

@dataclass
class KeyRing:
    """What this process holds: always the index key, the master key(s) only where allowed.

    During a master-key rotation two keys may be present (the current file and the new one that
    a crash left behind); unwrapping picks the one whose id the row names.
    """

    index: IndexKey
    masters: dict[str, MasterKey] = field(default_factory=dict)
    current_master_id: str | None = None

    @property
    def has_master(self) -> bool:
        return self.current_master_id is not None

    def master(self, key_id: str | None = None) -> MasterKey:
        wanted = key_id or self.current_master_id
        if wanted is None or wanted not in self.masters:
            if not self.masters:
                raise KeyStoreUnavailable(
                    "the master key is not available in this process: mailboxes cannot be opened "
                    "here (set store.master_key_file or MISSIVE_STORE__MASTER_KEY)"
                )
            raise KeyStoreUnavailable(f"master key {wanted} is not available")
        return self.masters[wanted]


def load_index_key(path: Path) -> IndexKey:
    return IndexKey(base64.b64decode(read_key_file(path).strip()))


def create_key_files(master_path: Path, index_path: Path) -> None:
    """Create the master and index keys if missing (``missive init``)."""
    if not master_path.exists():
        write_key_file(master_path, MasterKey.generate().encode())
    if not index_path.exists():
        write_key_file(index_path, base64.b64encode(os.urandom(_KEY)).decode())


def load_keyring(
    master_path: Path, index_path: Path, *, with_master: bool, master_env: str | None = None
) -> KeyRing:
    """Load the key ring; ``with_master=False`` gives the SMTP-only ring of C2."""
    ring = KeyRing(index=load_index_key(index_path))
    if not with_master:
        return ring
    if master_env:
        key = MasterKey.decode(master_env)
        ring.masters[key.key_id] = key
        ring.current_master_id = key.key_id
        return ring
    key = MasterKey.decode(read_key_file(master_path))
    ring.masters[key.key_id] = key
    ring.current_master_id = key.key_id
    pending = master_path.with_name(master_path.name + ".new")
    if pending.exists():  # a rotation was interrupted after writing the new key
        new = MasterKey.decode(read_key_file(pending))
        ring.masters[new.key_id] = new
    return ring

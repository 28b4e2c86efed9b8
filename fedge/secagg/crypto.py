"""The primitives, all from ``cryptography``: X25519, HKDF-SHA256, AES-256-GCM, Ed25519, ChaCha20.

- **Key agreement**: X25519 (RFC 7748) on raw 32-byte keys, the shared point run through
  HKDF-SHA256 (RFC 5869) with a label and the group's digest, so a key is bound to its purpose
  and its group: the share key of a pair never equals its mask seed.
- **Share encryption**: AES-256-GCM, a fresh 96-bit nonce per message, the sender, recipient
  and group as associated data, so the server can neither read nor redirect a share.
- **Signatures**: Ed25519 over the advertised keys, so a device can tell which keys the
  server relayed were made by their device (given identity keys it trusts).
- **Mask PRG**: the ChaCha20 keystream (RFC 8439) under a 256-bit key, read as uint32 or uint64
  words and reduced mod 2^bits (a power of two divides 2^32, so the words stay uniform). A seed
  shorter than 128 bits is refused (:class:`WeakSeed`); Flower's SecAgg+ folds its seeds to 32
  bits, which a search of 2^32 masks undoes. ChaCha20 beats AES on boards without AES
  instructions (a Raspberry Pi 4) and ties it on x86 (docs/secure-aggregation.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedge.secagg.errors import BadShare, BadSignature, InvalidParameters, WeakSeed, WrongSize

KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 12
TAG_BYTES = 16
SEED_BYTES = 32
MIN_SEED_BYTES = 16  # 128 bits
MAX_BITS = 64
_ZERO_NONCE = bytes(16)  # ChaCha20's 16-byte nonce: 64-bit counter + 64-bit nonce; one use per key

RandomBytes = Callable[[int], bytes]
Mask = npt.NDArray[np.uint32] | npt.NDArray[np.uint64]


def new_agreement_key(random_bytes: RandomBytes = os.urandom) -> X25519PrivateKey:
    """A fresh X25519 private key from 32 random bytes."""
    return X25519PrivateKey.from_private_bytes(random_bytes(KEY_BYTES))


def raw_private(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of an X25519 private key (what is Shamir-shared)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of the public half of an X25519 or Ed25519 key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private: X25519PrivateKey, peer_public: bytes, *, label: bytes, context: bytes) -> bytes:
    """HKDF-SHA256(X25519(private, peer), info = label ‖ context): 32 bytes, the same both ways."""
    if len(peer_public) != KEY_BYTES:
        raise WrongSize(f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public)}")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:  # a low-order point gives the all-zero secret
        raise BadShare(f"the peer's public key is not usable: {error}") from None
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=label + context).derive(shared)


def seal(key: bytes, plaintext: bytes, associated: bytes, random_bytes: RandomBytes) -> bytes:
    """AES-256-GCM: nonce ‖ ciphertext ‖ tag."""
    nonce = random_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output; a forged, altered or misdirected one: BadShare."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise BadShare("a share does not decrypt: altered, or not meant for this device") from None


def sign(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """An Ed25519 signature (64 bytes)."""
    return key.sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature under a raw 32-byte public key; else :class:`BadSignature`."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise BadSignature("the advertised keys are not signed by their device") from None


def mask_dtype(bits: int) -> type[np.uint32] | type[np.uint64]:
    """The unsigned words a vector mod 2^bits is held in."""
    if not 1 <= bits <= MAX_BITS:
        raise InvalidParameters(f"the masking field has 1 to {MAX_BITS} bits, got {bits}")
    return np.uint32 if bits <= 32 else np.uint64


def expand_mask(seed: bytes, length: int, bits: int) -> Mask:
    """The mask of ``length`` words uniform mod 2^bits that ``seed`` (≥ 128 bits) expands to."""
    words = expand_words(seed, length, bits)
    if bits in (32, 64):
        return words
    return np.bitwise_and(words, words.dtype.type((1 << bits) - 1))


def expand_words(seed: bytes, length: int, bits: int) -> Mask:
    """The same mask before its reduction mod 2^bits: whole uint32 / uint64 words.

    Sums of these reduced once at the end equal sums of reduced masks (2^bits divides the
    word's 2^32 or 2^64), so the client and the server skip one pass per mask.
    """
    if len(seed) < MIN_SEED_BYTES:
        raise WeakSeed(f"a mask seed needs at least {8 * MIN_SEED_BYTES} bits, got {8 * len(seed)}")
    dtype = mask_dtype(bits)
    key = seed if len(seed) == KEY_BYTES else _stretch(seed)
    stream = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    raw = stream.update(bytes(length * np.dtype(dtype).itemsize))
    return cast(
        Mask, np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)
    )


def _stretch(seed: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"fedge-secagg mask key").derive(seed)

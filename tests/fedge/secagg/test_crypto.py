"""The primitives: mask seeds of 128 bits or more, key agreement, sealed shares, signatures."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedge.secagg import BadShare, BadSignature, InvalidParameters, WeakSeed, expand_mask
from fedge.secagg.crypto import (
    MIN_SEED_BYTES,
    agree,
    expand_words,
    new_agreement_key,
    open_sealed,
    raw_public,
    seal,
    sign,
    verify,
)


@settings(max_examples=50)
@given(st.binary(max_size=MIN_SEED_BYTES - 1), st.integers(1, 64))
def test_a_mask_seed_shorter_than_128_bits_is_refused(seed, bits):
    with pytest.raises(WeakSeed, match="at least 128 bits"):
        expand_mask(seed, 10, bits)


@settings(max_examples=30)
@given(st.binary(min_size=MIN_SEED_BYTES, max_size=64), st.integers(1, 64))
def test_a_seed_of_128_bits_or_more_expands_to_words_below_2_to_bits(seed, bits):
    mask = expand_mask(seed, 257, bits)

    assert mask.shape == (257,)
    assert mask.dtype == (np.uint32 if bits <= 32 else np.uint64)
    assert bits >= 8 * mask.dtype.itemsize or int(mask.max()) < (1 << bits)
    assert np.array_equal(mask, expand_mask(seed, 257, bits))


def test_a_mask_extends_its_own_prefix_and_other_seeds_give_other_masks():
    long, short = expand_mask(b"k" * 32, 1000, 32), expand_mask(b"k" * 32, 10, 32)

    assert np.array_equal(long[:10], short)
    assert not np.array_equal(long, expand_mask(b"l" * 32, 1000, 32))


@pytest.mark.parametrize("bits", [1, 5, 16, 18, 32])
def test_mask_bits_are_balanced_and_words_uniform(bits):
    mask = expand_mask(bytes(range(32)), 40_000, bits).astype(np.uint64)

    ones = np.array([(mask >> i & 1).mean() for i in range(bits)])
    bins = np.bincount(mask >> max(0, bits - 4), minlength=min(16, 1 << bits))

    assert np.all(np.abs(ones - 0.5) < 0.02)
    assert stats.chisquare(bins).pvalue > 1e-4


def test_a_field_of_more_than_64_bits_is_refused():
    with pytest.raises(InvalidParameters, match="1 to 64 bits"):
        expand_mask(b"s" * 32, 4, 65)


def test_key_agreement_is_the_same_both_ways_and_bound_to_its_label_and_context():
    a, b = new_agreement_key(), new_agreement_key()

    ab = agree(a, raw_public(b), label=b"mask", context=b"group 1")

    assert ab == agree(b, raw_public(a), label=b"mask", context=b"group 1")
    assert len(ab) == 32
    assert ab != agree(a, raw_public(b), label=b"share", context=b"group 1")
    assert ab != agree(a, raw_public(b), label=b"mask", context=b"group 2")


def test_a_low_order_public_key_is_a_bad_share_not_a_crash():
    with pytest.raises(BadShare, match="not usable"):
        agree(new_agreement_key(), bytes(32), label=b"mask", context=b"")


def test_a_sealed_share_opens_only_with_its_key_and_associated_data():
    key = b"K" * 32
    sealed = seal(key, b"share", b"from 1 to 2", np.random.default_rng(0).bytes)

    assert open_sealed(key, sealed, b"from 1 to 2") == b"share"
    with pytest.raises(BadShare, match="does not decrypt"):
        open_sealed(key, sealed, b"from 1 to 3")
    with pytest.raises(BadShare, match="does not decrypt"):
        open_sealed(b"L" * 32, sealed, b"from 1 to 2")
    altered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(BadShare, match="does not decrypt"):
        open_sealed(key, altered, b"from 1 to 2")


def test_a_forged_or_misattributed_signature_is_refused():
    device, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signature = sign(device, b"keys")

    verify(raw_public(device), signature, b"keys")
    with pytest.raises(BadSignature):
        verify(raw_public(device), sign(forger, b"keys"), b"keys")
    with pytest.raises(BadSignature):
        verify(raw_public(device), signature, b"other keys")
    with pytest.raises(BadSignature):
        verify(raw_public(forger), signature, b"keys")


@settings(max_examples=30)
@given(st.integers(1, 64), st.integers(0, 500))
def test_whole_words_reduced_are_the_mask_and_short_seeds_are_refused_there_too(bits, length):
    seed = bytes(range(32))

    words = expand_words(seed, length, bits)

    assert np.array_equal(
        words & words.dtype.type((1 << bits) - 1) if bits % 32 else words,
        expand_mask(seed, length, bits),
    )
    with pytest.raises(WeakSeed):
        expand_words(seed[:15], length, bits)

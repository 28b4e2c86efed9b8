"""Each bad message or call is refused with the typed error that names its reason."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.secagg import (
    AdvertiseKeys,
    BadShare,
    BadSignature,
    EncryptedShare,
    GroupAbandoned,
    GroupParams,
    InvalidParameters,
    LateMessage,
    MalformedMessage,
    MaskedInput,
    NotInGroup,
    OutOfField,
    OutOfOrder,
    ReplayedMessage,
    SecAggClient,
    SecAggError,
    ShareKeys,
    Unmasking,
    WrongSize,
)
from fedge.secagg.crypto import raw_public, sign
from fedge.secagg.messages import signed_advertisement
from tests.fedge.secagg.group import Group, make_group, run_round


@pytest.fixture
def group() -> Group:
    return make_group(6, seed=11, degree=4, threshold=3, bits=12, length=8)


def first(group: Group) -> int:
    return group.params.members[0]


def advertised(group: Group) -> Group:
    run_round(group, 0)
    return group


def shared(group: Group) -> Group:
    run_round(advertised(group), 1)
    return group


def masked(group: Group) -> Group:
    run_round(shared(group), 2)
    return group


def test_every_error_names_a_stable_reason():
    reasons = {cls.reason for cls in SecAggError.__subclasses__()}
    assert {
        "not_in_group",
        "replayed",
        "late",
        "bad_signature",
        "bad_share",
        "abandoned",
    } <= reasons
    assert WrongSize.reason == "wrong_size" and OutOfField.reason == "out_of_field"
    assert issubclass(WrongSize, MalformedMessage) and issubclass(OutOfField, MalformedMessage)


# --- round 1: advertise keys --------------------------------------------------------------------


def test_keys_signed_by_another_device_are_a_bad_signature(group):
    keys = group.clients[first(group)].advertise()
    forged = dataclasses.replace(
        keys, signature=sign(Ed25519PrivateKey.generate(), keys.signed_bytes(group.params))
    )

    with pytest.raises(BadSignature, match="not signed by their device"):
        group.server.receive(forged)


def test_keys_swapped_by_a_relay_are_a_bad_signature_at_the_neighbour(group):
    run_round(group, 0)
    device = first(group)
    relayed = list(group.server.keys_for(device))
    mitm = relayed[0]
    relayed[0] = dataclasses.replace(mitm, mask_key=raw_public(Ed25519PrivateKey.generate()))

    with pytest.raises(BadSignature):
        group.clients[device].share_keys(relayed)


def test_keys_signed_for_another_group_are_a_bad_signature(group):
    other = dataclasses.replace(group.params, group=2)
    device = first(group)
    cipher, mask = (
        raw_public(Ed25519PrivateKey.generate()),
        raw_public(Ed25519PrivateKey.generate()),
    )
    signature = sign(group.identities[device], signed_advertisement(other, device, cipher, mask))
    keys = AdvertiseKeys(group.params.group, device, cipher, mask, signature)

    with pytest.raises(BadSignature):
        group.server.receive(keys)


def test_a_device_outside_the_group_is_refused(group):
    keys = dataclasses.replace(group.clients[first(group)].advertise(), device=99)

    with pytest.raises(NotInGroup, match="99 is not in group"):
        group.server.receive(keys)


def test_a_message_for_another_group_is_refused(group):
    keys = dataclasses.replace(group.clients[first(group)].advertise(), group=7)

    with pytest.raises(NotInGroup, match="group 7"):
        group.server.receive(keys)


def test_a_replayed_advertisement_is_refused(group):
    keys = group.clients[first(group)].advertise()
    group.server.receive(keys)

    with pytest.raises(ReplayedMessage, match="already advertised"):
        group.server.receive(keys)


def test_an_advertisement_after_its_round_closed_is_late(group):
    late = group.params.members[-1]
    run_round(group, 0, {late})

    with pytest.raises(LateMessage, match="advertise"):
        group.server.receive(group.clients[late].advertise())


@pytest.mark.parametrize(
    ("field", "value"),
    [("cipher_key", bytes(31)), ("mask_key", bytes(33)), ("signature", bytes(63))],
)
def test_keys_or_signature_of_the_wrong_size_are_refused(group, field, value):
    keys = group.clients[first(group)].advertise()

    with pytest.raises(WrongSize, match=field if field != "signature" else "signature"):
        dataclasses.replace(keys, **{field: value})


# --- round 2: share keys ------------------------------------------------------------------------


def test_shares_before_their_round_are_out_of_order(group):
    client = group.clients[first(group)]
    client.advertise()
    message = ShareKeys(group.params.group, first(group), ())

    with pytest.raises(OutOfOrder, match="advertise"):
        group.server.receive(message)


def test_shares_for_a_non_neighbour_are_refused(group):
    advertised(group)
    device = first(group)
    message = group.clients[device].share_keys(group.server.keys_for(device))
    stranger = next(
        d for d in group.params.members if d != device and d not in group.params.neighbours[device]
    )
    forged = dataclasses.replace(message.shares[0], recipient=stranger)

    with pytest.raises(NotInGroup, match="not advertised neighbours"):
        group.server.receive(ShareKeys(group.params.group, device, (forged, *message.shares[1:])))


def test_shares_missing_a_neighbour_are_refused(group):
    advertised(group)
    device = first(group)
    message = group.clients[device].share_keys(group.server.keys_for(device))

    with pytest.raises(MalformedMessage, match="missing"):
        group.server.receive(ShareKeys(group.params.group, device, message.shares[1:]))


def test_a_sealed_share_of_the_wrong_size_is_refused():
    with pytest.raises(WrongSize, match="sealed share"):
        EncryptedShare(1, 2, bytes(10))


def test_a_share_tampered_with_in_transit_is_a_bad_share(group):
    run_round(advertised(group), 1)
    device = first(group)
    shares = list(group.server.shares_for(device))
    sealed = bytearray(shares[0].sealed)
    sealed[-1] ^= 1
    shares[0] = dataclasses.replace(shares[0], sealed=bytes(sealed))

    with pytest.raises(BadShare, match="does not decrypt"):
        group.clients[device].open_shares(shares)


def test_a_share_redirected_to_another_device_is_refused(group):
    run_round(advertised(group), 1)
    device, other = group.params.members[:2]
    theirs = group.server.shares_for(other)

    with pytest.raises(NotInGroup, match=f"for device {other}"):
        group.clients[device].open_shares(theirs)


def test_too_few_neighbours_left_make_a_client_stop_instead_of_sharing(group):
    device = first(group)
    near = set(group.params.neighbours[device])
    run_round(group, 0, near - {min(near)})  # only one neighbour left, threshold 3

    with pytest.raises(GroupAbandoned, match="below the threshold 3"):
        group.clients[device].share_keys(group.server.keys_for(device))


# --- round 3: masked input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "error", "match"),
    [
        (np.zeros(7, np.uint32), WrongSize, "8 values"),
        (np.full(8, 1 << 12, np.uint32), OutOfField, "below 2\\^12"),
    ],
)
def test_a_masked_vector_of_the_wrong_size_or_field_is_refused(group, vector, error, match):
    shared(group)

    with pytest.raises(error, match=match):
        group.server.receive(MaskedInput(group.params.group, first(group), vector))


def test_a_masked_vector_of_floats_is_malformed():
    with pytest.raises(MalformedMessage, match="unsigned integers"):
        MaskedInput(1, 2, np.zeros(8, np.float32))


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (np.zeros(9, np.int64), WrongSize),
        (np.full(8, -1, np.int64), OutOfField),
        (np.full(8, 1 << 12, np.int64), OutOfField),
        (np.zeros(8, np.float64), MalformedMessage),
    ],
)
def test_a_client_refuses_an_input_outside_the_field(group, values, error):
    shared(group)
    device = first(group)
    group.clients[device].open_shares(group.server.shares_for(device))

    with pytest.raises(error):
        group.clients[device].mask(values)


def test_a_masked_input_from_a_device_that_sent_no_shares_is_refused(group):
    silent = first(group)
    run_round(group, 0)
    run_round(group, 1, {silent})

    with pytest.raises(NotInGroup, match="sent no shares"):
        group.server.receive(MaskedInput(group.params.group, silent, np.zeros(8, np.uint32)))


def test_a_replayed_masked_input_is_refused(group):
    shared(group)
    device = first(group)
    group.clients[device].open_shares(group.server.shares_for(device))
    message = group.clients[device].mask(group.inputs[device])
    group.server.receive(message)

    with pytest.raises(ReplayedMessage, match="masked input"):
        group.server.receive(message)


# --- round 4: unmasking -------------------------------------------------------------------------


def test_an_unmask_request_naming_a_device_as_survivor_and_dropout_cannot_be_made(group):
    masked(group)
    request = group.server.unmask_request_for(first(group))

    with pytest.raises(MalformedMessage, match="both survive and drop out"):
        dataclasses.replace(request, dropouts=request.survivors[:1])


def test_a_client_refuses_an_unmask_request_that_does_not_split_its_senders(group):
    masked(group)
    device = first(group)
    request = group.server.unmask_request_for(device)

    with pytest.raises(MalformedMessage, match="split exactly"):
        group.clients[device].unmask(dataclasses.replace(request, survivors=request.survivors[1:]))


def test_an_unmasking_with_the_wrong_kind_of_share_is_refused_by_the_server(group):
    masked(group)
    device = first(group)
    honest = group.clients[device].unmask(group.server.unmask_request_for(device))
    swapped = Unmasking(honest.group, device, (), honest.self_mask_shares)

    with pytest.raises(MalformedMessage, match="exactly"):
        group.server.receive(swapped)


def test_an_unmasking_share_past_the_prime_is_out_of_field(group):
    with pytest.raises(OutOfField, match="below the prime"):
        Unmasking(1, 2, ((3, b"\xff" * 64),), ())


def test_an_unmasking_share_of_the_wrong_size_is_refused():
    with pytest.raises(WrongSize, match="64 bytes"):
        Unmasking(1, 2, ((3, bytes(12)),), ())


def test_client_steps_out_of_order_are_refused(group):
    client = group.clients[first(group)]

    with pytest.raises(OutOfOrder, match="follows advertised"):
        client.share_keys(())
    client.advertise()
    with pytest.raises(OutOfOrder, match="follows new"):
        client.advertise()
    with pytest.raises(OutOfOrder, match="follows opened"):
        client.mask(group.inputs[first(group)])


def test_a_device_whose_upload_was_lost_can_still_help_unmask(group):
    shared(group)
    lost = first(group)
    for device, client in group.clients.items():
        client.open_shares(group.server.shares_for(device))
        if device != lost:
            group.server.receive(client.mask(group.inputs[device]))
    group.server.close_round()
    request = group.server.unmask_request_for(lost)

    answer = group.clients[lost].unmask(request)

    assert {owner for owner, _ in answer.self_mask_shares} == set(request.survivors)
    with pytest.raises(NotInGroup, match="no masked input"):
        group.server.receive(answer)


def test_messages_to_an_abandoned_group_are_refused(group):
    run_round(group, 0, set(group.params.members[:4]))

    with pytest.raises(GroupAbandoned, match="abandoned"):
        group.server.receive(group.clients[group.params.members[0]].advertise())


def test_a_result_before_unmasking_is_out_of_order(group):
    with pytest.raises(OutOfOrder, match="not finished"):
        group.server.result()


@pytest.mark.parametrize(
    "change",
    [
        {"members": (1, 2)},
        {"members": (3, 2, 1)},
        {"degree": 3},
        {"threshold": 1},
        {"threshold": 5},
        {"bits": 0},
        {"bits": 65},
        {"length": 0},
        {"graph_seed": bytes(8)},
    ],
)
def test_group_parameters_no_run_can_have_are_refused(change):
    base = GroupParams(
        1, tuple(range(6)), degree=4, threshold=3, bits=8, length=4, graph_seed=bytes(16)
    )

    with pytest.raises(InvalidParameters):
        dataclasses.replace(base, **change)


def test_a_client_for_a_device_outside_the_group_cannot_be_made(group):
    with pytest.raises(NotInGroup):
        SecAggClient(group.params, 5, identity=Ed25519PrivateKey.generate(), identities={})

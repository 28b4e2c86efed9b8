"""Secure aggregation's cost on one core: a device's crypto time and bytes, the server's unmasking.

Run: ``python -m benchmarks.secagg_cost [--quick] [--full] [--json PATH]``. For each group size
n (100, 1,000; k = 40 neighbours, the threshold ``dropout_threshold`` gives for 30 %:
11 and 10) and model size m (100 K, 1 M integers of
``fix8``, masked in Z_2^sum_bits(n): 15 and 18 bits) it runs a real group of
:mod:`fedge.secagg` clients and one server, and prints:

- per device: advertise + share keys (k signature checks, 2k X25519, Shamir of 2 secrets, k
  AES-GCM seals) and masking (k opens, k+1 ChaCha20 masks of m words), median over devices;
  bytes sent and received (the masked vector as ``fedge.secagg.packing`` encodes it, sum_bits
  bits a word; the small messages at their fields' sizes);
- server: the unmasking at 0 / 10 / 30 % of the group dropped after sharing keys and before
  uploading (the costly case: each dropout's key is rebuilt and its masks with every surviving
  neighbour regenerated), and whether the sum came out exact.

The floor in the same run is one ChaCha20 mask of m words (a device needs k + 1 of them); the
peer is Flower's SecAgg+ primitives (P-384 ECDH, PyCryptodome Shamir of the PEM key, Fernet,
the 32-bit-seeded ``pseudo_rand_gen``) measured in ``.venv-flower`` on the same sizes and
composed with the same operation counts, when that venv exists (``make vs-flower`` builds it);
otherwise the peer is skipped, saying why.

At n = 1,000 and m = 1 M the other devices' masked vectors are random words of the right shape
unless ``--full`` (masking 1,000 real vectors of 1 M words takes minutes): the server's
unmasking does the same work either way, but the sum is then not checked (said in the table).
Each client is forked (``copy.copy``) after masking so one group's shares serve all three
dropout rates; a real device answers one unmask request, once.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import ROOT, add_json_argument, cell, emit, print_table, ratio

DEGREE = 40
SIZES = [(100, 100_000), (100, 1_000_000), (1000, 100_000), (1000, 1_000_000)]
QUICK_SIZES = [(60, 20_000)]
DROPOUTS = (0.0, 0.1, 0.3)
CODEC = "fix8:range=0.05"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """(result, milliseconds) of one call."""
    start = time.perf_counter()
    result = action()
    return result, 1e3 * (time.perf_counter() - start)


def one_core() -> str:
    """Pin this process to one CPU (the figures are per core); say which."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"cpu {cpu}"


def run_sizes(members: int, length: int, *, full: bool) -> dict[str, Any]:
    """One group of ``members`` devices masking ``length`` integers; its figures."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedge.codecs import parse_codec
    from fedge.secagg import (
        GroupParams,
        GroupServer,
        MaskedInput,
        SecAggClient,
        Stage,
        dropout_threshold,
    )
    from fedge.secagg.crypto import expand_mask, raw_public
    from fedge.secagg.messages import SEALED_BYTES
    from fedge.secagg.packing import packed_size

    bits = parse_codec(CODEC).sum_bits(members)
    degree = min(DEGREE, members - 1)
    # The largest t that outlives the worst dropout measured (30 %) but for a 10^-6 chance.
    threshold = dropout_threshold(members, degree, dropout=max(DROPOUTS))
    ids = tuple(range(members))
    params = GroupParams(
        group=1,
        members=ids,
        degree=degree,
        threshold=threshold,
        bits=bits,
        length=length,
        graph_seed=os.urandom(32),
    )
    identities = {d: Ed25519PrivateKey.generate() for d in ids}
    directory = {d: raw_public(k) for d, k in identities.items()}
    clients = {
        d: SecAggClient(params, d, identity=identities[d], identities=directory) for d in ids
    }
    rng = np.random.default_rng(0)
    server = GroupServer(params, directory)
    prepare_ms: list[float] = []
    for client in clients.values():
        message, ms = timed(client.advertise)
        prepare_ms.append(ms)
        server.receive(message)
    server.close_round()
    for d, client in clients.items():
        message, ms = timed(lambda c=client, d=d: c.share_keys(server.keys_for(d)))
        prepare_ms[d] += ms
        server.receive(message)
    server.close_round()
    after_sharing = server.to_bytes()

    # Dropout sets nest (10 % ⊂ 30 %), device 0 (the measured one) always survives.
    order = rng.permutation(np.arange(1, members))
    dropped = {rate: set(order[: round(rate * members)].tolist()) for rate in DROPOUTS}
    servers = {rate: GroupServer.from_bytes(after_sharing, directory) for rate in DROPOUTS}
    real = full or members * length <= 10_000_000
    measured = set(ids) if real else set(ids[:5])
    mask_ms, receive_ms = [], []
    sums = {rate: np.zeros(length, np.int64) for rate in DROPOUTS}
    forks: dict[float, dict[int, SecAggClient]] = {rate: {} for rate in DROPOUTS}
    for d, client in clients.items():
        x = rng.integers(0, 256, length)
        client.open_shares(server.shares_for(d))
        if d in measured:
            message, ms = timed(lambda c=client, x=x: c.mask(x))
            mask_ms.append(ms)
        else:  # the server cannot tell these from masked inputs; its unmasking work is the same
            message = MaskedInput(1, d, rng.integers(0, 1 << bits, length, dtype=np.uint32))
        for rate, group_server in servers.items():
            if d in dropped[rate]:
                continue
            _, ms = timed(lambda s=group_server, m=message: s.receive(m))
            receive_ms.append(ms)
            sums[rate] += x
            forks[rate][d] = copy.copy(client)
    unmask_ms, exact = {}, {}
    for rate, group_server in servers.items():
        group_server.close_round()
        for d, fork in forks[rate].items():
            group_server.receive(fork.unmask(group_server.unmask_request_for(d)))
        stage, ms = timed(group_server.close_round)
        unmask_ms[rate] = ms
        if stage is not Stage.DONE:  # dropout beyond what t was sized for: a figure, not a crash
            exact[rate] = f"abandoned: {group_server.state.abandoned}"
        elif real:
            exact[rate] = bool(np.array_equal(group_server.result(), sums[rate] % (1 << bits)))
        else:
            exact[rate] = None
    floor_ms = min(timed(lambda: expand_mask(os.urandom(32), length, bits))[1] for _ in range(3))

    k = degree
    sent = {
        "advertise": 8 + 8 + 32 + 32 + 64,
        "share_keys": 16 + k * (16 + SEALED_BYTES),
        "masked_input": packed_size(length, bits),
        "unmasking": 16 + k * (8 + 64),
    }
    received = {
        "keys": k * sent["advertise"],
        "shares": k * (16 + SEALED_BYTES),
        "request": 16 + 8 * k,
    }
    return {
        "members": members,
        "length": length,
        "degree": degree,
        "threshold": threshold,
        "bits": bits,
        "device_prepare_ms": statistics.median(prepare_ms),
        "device_mask_ms": statistics.median(mask_ms),
        "server_receive_ms": statistics.median(receive_ms),
        "server_unmask_ms": unmask_ms,
        "sum_exact": exact,
        "one_mask_ms": floor_ms,
        "bytes_sent": sent,
        "bytes_received": received,
        "plain_upload_bytes": length,  # fix8 without secure aggregation: one byte per value
    }


# --- Flower's primitives, run in .venv-flower ---------------------------------------------------


def flower_primitives(degree: int, threshold: int, lengths: list[int]) -> dict[str, Any]:
    """Milliseconds of each Flower SecAgg+ primitive (run inside .venv-flower)."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        encrypt,
        generate_key_pairs,
        generate_shared_key,
        private_key_to_bytes,
    )
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    sk, pk = generate_key_pairs()
    _, pk2 = generate_key_pairs()
    _, keygen = timed(generate_key_pairs)
    key, ecdh = timed(lambda: generate_shared_key(sk, pk2))
    pem = private_key_to_bytes(sk)
    shares_b, split_seed = timed(lambda: create_shares(os.urandom(32), threshold, degree))
    shares_sk, split_key = timed(lambda: create_shares(pem, threshold, degree))
    _, combine_seed = timed(lambda: combine_shares(list(shares_b[:threshold])))
    _, combine_key = timed(lambda: combine_shares(list(shares_sk[:threshold])))
    plaintext = b"x" * (12 + len(shares_b[0]) + len(shares_sk[0]))
    token, seal = timed(lambda: encrypt(key, plaintext))
    _, unseal = timed(lambda: decrypt(key, token))
    prg = {}
    for length in lengths:
        _, prg[str(length)] = timed(lambda n=length: pseudo_rand_gen(key, 1 << 18, [(n,)]))
    return {
        "keygen": keygen,
        "ecdh": ecdh,
        "split_seed": split_seed,
        "split_key": split_key,
        "combine_seed": combine_seed,
        "combine_key": combine_key,
        "seal": seal,
        "open": unseal,
        "prg": prg,
        "share_bytes": len(shares_b[0]) + len(shares_sk[0]),
        "token_bytes": len(token),
        "public_key_bytes": len(pk.public_bytes(*_pem_public())),
    }


def _pem_public() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


def run_flower(
    degree: int, threshold: int, lengths: list[int]
) -> tuple[dict[str, Any] | None, str]:
    """Flower's primitive costs from .venv-flower, or None and why not."""
    if not FLOWER_PYTHON.exists():
        return None, f"{FLOWER_PYTHON.relative_to(ROOT)} is missing (make vs-flower builds it)"
    command = [
        str(FLOWER_PYTHON),
        "-m",
        "benchmarks.secagg_cost",
        "--flower-primitives",
        "--degree",
        str(degree),
        "--threshold",
        str(threshold),
        "--lengths",
        ",".join(map(str, lengths)),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"Flower's primitives did not run: {tail}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def flower_composed(
    flower: dict[str, Any], figures: dict[str, Any], rate: float
) -> dict[str, float]:
    """Flower's device and server times at these sizes, composed from its primitive costs."""
    k, n, m = figures["degree"], figures["members"], str(figures["length"])
    prepare = 2 * flower["keygen"] + flower["split_seed"] + flower["split_key"]
    prepare += k * (flower["ecdh"] + flower["seal"])
    mask = k * (2 * flower["ecdh"] + flower["open"]) + (k + 1) * flower["prg"][m]
    dropouts = round(rate * n)
    survivors = n - dropouts
    server = survivors * (flower["combine_seed"] + flower["prg"][m])
    lost_masks = dropouts * k * survivors / n  # each dropout's neighbours that survived
    server += dropouts * flower["combine_key"] + lost_masks * (flower["ecdh"] + flower["prg"][m])
    return {"device_ms": prepare + mask, "server_unmask_ms": server}


# --- the table ----------------------------------------------------------------------------------


def report(results: list[dict[str, Any]], flower: dict[str, Any] | None, why: str) -> None:
    """Print the device and server tables."""
    rows = []
    for r in results:
        device = r["device_prepare_ms"] + r["device_mask_ms"]
        peer = flower_composed(flower, r, 0.0)["device_ms"] if flower else None
        protocol = sum(r["bytes_sent"].values()) - r["bytes_sent"]["masked_input"]
        rows.append(
            [
                f"n={r['members']:,} m={r['length']:,}",
                f"{r['degree']}/{r['threshold']}",
                str(r["bits"]),
                cell(r["device_prepare_ms"], 1),
                cell(r["device_mask_ms"], 1),
                cell(device / r["one_mask_ms"], 1),
                cell(peer, 1),
                cell(ratio(peer, device), 1),
                f"{protocol + sum(r['bytes_received'].values()):,}",
                cell(r["bytes_sent"]["masked_input"] / r["plain_upload_bytes"], 2),
            ]
        )
    print("\nPer device (one core, median over devices)")
    print_table(
        [
            ("group", 22),
            ("k/t", 7),
            ("bits", 6),
            ("keys ms", 10),
            ("mask ms", 10),
            ("x 1 mask", 10),
            ("Flower ms", 11),
            ("x ours", 8),
            ("protocol B", 12),
            ("y / fix8", 10),
        ],
        rows,
        notes=[
            "keys = advertise + share keys; mask = open shares + k+1 masks; x 1 mask = device "
            "time / one ChaCha20 mask of m words (the floor, same run)",
            "protocol B = bytes sent and received besides the masked vector; y / fix8 = masked "
            "vector (sum_bits, bit-packed) / plain fix8 upload",
        ],
    )
    rows = []
    for r in results:
        for rate in DROPOUTS:
            ms = r["server_unmask_ms"][rate]
            peer = flower_composed(flower, r, rate)["server_unmask_ms"] if flower else None
            exact = r["sum_exact"][rate]
            rows.append(
                [
                    f"n={r['members']:,} m={r['length']:,}",
                    f"{rate:.0%}",
                    cell(ms / 1e3, 2),
                    cell(r["server_receive_ms"], 2),
                    cell(None if peer is None else peer / 1e3, 2),
                    cell(ratio(peer, ms), 1),
                    {None: "-", True: "yes", False: "NO"}.get(exact, "abandoned"),
                ]
            )
    print("\nServer unmasking (one core; dropouts after sharing keys, before masked upload)")
    print_table(
        [
            ("group", 22),
            ("dropout", 9),
            ("unmask s", 10),
            ("recv ms/y", 11),
            ("Flower s", 10),
            ("x ours", 8),
            ("exact", 7),
        ],
        rows,
        notes=[f"Flower peer skipped: {why}"]
        if flower is None
        else ["Flower = its primitives measured in .venv-flower, composed with the same counts"],
    )


def main() -> None:
    """Run the groups, print the tables and the JSON summary."""
    parser = argparse.ArgumentParser(description="Secure aggregation's cost on one core.")
    parser.add_argument("--quick", action="store_true", help="one small group (a smoke test)")
    parser.add_argument("--full", action="store_true", help="real masked inputs at every size")
    parser.add_argument("--flower-primitives", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--degree", type=int, default=DEGREE, help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--lengths", default="", help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()
    if args.flower_primitives:  # the peer's side, inside .venv-flower
        lengths = [int(x) for x in args.lengths.split(",") if x]
        print(json.dumps(flower_primitives(args.degree, args.threshold, lengths)))
        return
    core = one_core()
    sizes = QUICK_SIZES if args.quick else SIZES
    started = time.perf_counter()
    results = []
    for members, length in sizes:
        print(f"group n={members:,} m={length:,} …", file=sys.stderr, flush=True)
        results.append(run_sizes(members, length, full=args.full))
    degree, threshold = results[0]["degree"], results[0]["threshold"]
    flower, why = run_flower(degree, threshold, sorted({r["length"] for r in results}))
    report(results, flower, why)
    emit(
        {
            "benchmark": "secagg_cost",
            "core": core,
            "quick": args.quick,
            "seconds": time.perf_counter() - started,
            "groups": [
                {
                    **r,
                    "server_unmask_ms": {str(k): v for k, v in r["server_unmask_ms"].items()},
                    "sum_exact": {str(k): v for k, v in r["sum_exact"].items()},
                }
                for r in results
            ],
            "flower": flower,
            "flower_skipped": why or None,
        },
        args.json,
    )


if __name__ == "__main__":
    main()

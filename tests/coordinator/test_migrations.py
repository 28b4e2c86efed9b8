"""Schema migrations keep a running coordinator's data: upgrade from the previous head, and back."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, inspect, text

from coordinator.db.migrate import alembic_config, upgrade
from coordinator.db.session import make_engine
from tests.databases import fresh_database

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

ROUNDS = [  # (id, number, status, reported): one closed, one open
    (7, 1, "COMPLETED", 2),
    (8, 2, "OPEN", 1),
]


def insert_a_sync_job_with_rounds(db: Connection) -> None:
    """A job at schema 0004 with two rounds, a lease and a version naming them."""
    db.execute(text("INSERT INTO blobs VALUES ('a', 1, :d, 0)"), {"d": b"x"})
    db.execute(
        text(
            "INSERT INTO plans (id, name, plan_sha256, initial_weights_sha256, manifest,"
            " num_params, created_at) VALUES (1, 'p', 'a', 'a', '{}', 1, 0)"
        )
    )
    db.execute(
        text(
            "INSERT INTO jobs (id, name, plan_id, mode, status, config, current_version,"
            " created_at) VALUES (1, 'j', 1, 'SYNC', 'RUNNING', '{}', 1, 0)"
        )
    )
    db.execute(text("INSERT INTO devices VALUES ('d', 't', 0, 0, '', '')"))
    for round_id, number, status, reported in ROUNDS:
        db.execute(
            text(
                "INSERT INTO rounds (id, job_id, number, base_version, status, target, minimum,"
                " to_select, selected, reported, opened_at, deadline_at)"
                " VALUES (:id, 1, :n, 0, :s, 2, 1, 3, 0, :r, 10, 20)"
            ),
            {"id": round_id, "n": number, "s": status, "r": reported},
        )
    db.execute(
        text(
            "INSERT INTO leases (id, job_id, device_id, round_id, base_version, status,"
            " issued_at, deadline_at) VALUES ('l', 1, 'd', 8, 1, 'ACTIVE', 30, 40)"
        )
    )
    db.execute(
        text(
            "INSERT INTO versions (job_id, number, weights_sha256, created_at, num_updates,"
            " num_examples, mean_staleness, update_norm_mean, update_norm_var, round_id)"
            " VALUES (1, 1, 'a', 20, 2, 20, 0, 1, 0, 7)"
        )
    )


def rounds_of(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as db:
        rows = db.execute(text("SELECT id, number, status, reported FROM rounds ORDER BY id"))
        return [tuple(row) for row in rows]


def columns_of(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


@pytest.mark.parametrize("kind", KINDS)
def test_upgrading_from_0004_drops_rounds_selected_and_keeps_every_round(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)

        upgrade(engine)  # to head, with a lease and a version naming the rounds

        assert rounds_of(engine) == ROUNDS
        assert "selected" not in columns_of(engine, "rounds")
        with engine.connect() as db:
            assert db.execute(text("SELECT round_id FROM leases")).scalar() == 8
            assert db.execute(text("SELECT round_id FROM versions")).scalar() == 7
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_downgrading_to_0004_brings_rounds_selected_back_as_zero(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)
        upgrade(engine)

        with engine.begin() as db:
            config = alembic_config()
            config.attributes["connection"] = db
            command.downgrade(config, "0004")

        assert rounds_of(engine) == ROUNDS
        with engine.connect() as db:
            assert db.execute(text("SELECT DISTINCT selected FROM rounds")).scalars().all() == [0]
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_0006_adds_the_privacy_columns_as_null_and_takes_them_away_again(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)
        upgrade(engine)

        with engine.connect() as db:
            assert db.execute(text("SELECT privacy_state FROM jobs")).scalar() is None
            assert db.execute(text("SELECT privacy FROM versions")).scalar() is None
        with engine.begin() as db:
            config = alembic_config()
            config.attributes["connection"] = db
            command.downgrade(config, "0005")

        assert "privacy_state" not in columns_of(engine, "jobs")
        assert "privacy" not in columns_of(engine, "versions")
        assert rounds_of(engine) == ROUNDS
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_0008_and_0010_add_codec_and_defence_columns_empty_and_take_them_away_again(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)
        upgrade(engine)

        with engine.connect() as db:
            lease = db.execute(text("SELECT codec, codec_seed FROM leases")).one()
            assert tuple(lease) == (None, None)
            assert db.execute(text("SELECT upload_bytes FROM versions")).scalar() == 0
            assert db.execute(text("SELECT defences FROM versions")).scalar() is None
        with engine.begin() as db:
            config = alembic_config()
            config.attributes["connection"] = db
            command.downgrade(config, "0006")

        assert not {"codec", "codec_seed"} & columns_of(engine, "leases")
        assert not {"codec", "upload_bytes"} & columns_of(engine, "updates")
        assert "upload_bytes" not in columns_of(engine, "versions")
        assert rounds_of(engine) == ROUNDS
        assert "defences" not in columns_of(engine, "versions")
        assert "privacy" in columns_of(engine, "versions")
        engine.dispose()

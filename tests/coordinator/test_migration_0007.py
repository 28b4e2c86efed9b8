"""Migration 0007: evaluations, stage changes and a stage per version, one live per job."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import exc, inspect, text

from coordinator.db.migrate import alembic_config, upgrade
from coordinator.db.session import make_engine
from tests.coordinator.test_migrations import KINDS, insert_a_sync_job_with_rounds
from tests.databases import fresh_database


@pytest.mark.parametrize("kind", KINDS)
def test_0007_makes_every_existing_version_a_candidate_and_downgrades_cleanly(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)
        upgrade(engine)

        with engine.connect() as db:
            assert db.execute(text("SELECT stage FROM versions")).scalars().all() == ["CANDIDATE"]
        with engine.begin() as db:
            config = alembic_config()
            config.attributes["connection"] = db
            command.downgrade(config, "0006")

        tables = inspect(engine).get_table_names()
        assert "evaluations" not in tables and "stage_changes" not in tables
        assert "stage" not in {c["name"] for c in inspect(engine).get_columns("versions")}
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_live_version_of_one_job_is_refused_by_the_database(tmp_path, kind):
    with fresh_database(kind, tmp_path) as db_url:
        engine = make_engine(db_url)
        upgrade(engine, "0004")
        with engine.begin() as db:
            insert_a_sync_job_with_rounds(db)
            db.execute(
                text(
                    "INSERT INTO versions (job_id, number, weights_sha256, created_at,"
                    " num_updates, num_examples, mean_staleness, update_norm_mean,"
                    " update_norm_var) VALUES (1, 2, 'a', 30, 2, 20, 0, 1, 0)"
                )
            )
        upgrade(engine)
        with engine.begin() as db:
            db.execute(text("UPDATE versions SET stage = 'LIVE' WHERE number = 1"))

        with pytest.raises(exc.IntegrityError), engine.begin() as db:
            db.execute(text("UPDATE versions SET stage = 'LIVE' WHERE number = 2"))
        engine.dispose()

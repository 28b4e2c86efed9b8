"""What a device install must never pull in: the one list the install test and benchmark check."""

from __future__ import annotations

# Distributions a board must not get: TensorFlow, the coordinator's stack, the simulator's data.
FORBIDDEN_DISTRIBUTIONS = frozenset(
    {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "alembic",
        "psycopg",
        "pydantic",
        "scikit-learn",
        "mlxtend",
    }
)

"""HTTP layer: thin routes, pydantic schemas, dependencies and the error handler."""

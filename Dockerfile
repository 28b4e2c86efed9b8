# The coordinator service, built from this checkout: docker build -t fedge-coordinator .
# Not built in CI (there is no Docker there); tests/test_deploy.py checks that every file this
# names exists. Run it with FEDGE_DB_URL and FEDGE_ADMIN_TOKEN set (docs/operations.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The service's rooms only: `fedge` lists the other rooms' commands as "not installed".
COPY pyproject.toml README.md constraints.txt ./
COPY fedge ./fedge
COPY coordinator ./coordinator
RUN pip install -c constraints.txt ".[server]" \
    && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /home/fedge --create-home fedge
USER 10001
WORKDIR /home/fedge

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# Replicas share the database (PostgreSQL); run `fedge coordinator migrate` once before them.
CMD ["fedge", "coordinator", "serve", "--host", "0.0.0.0", "--port", "8000", "--log-format", "json"]

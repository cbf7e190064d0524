# raftline image: the worker by default; the same image runs the CLI and the codec server.
#   docker build -t raftline .
#   docker run --rm -e TEMPORAL_ADDRESS=host.docker.internal:7233 raftline
#   docker run --rm -e TEMPORAL_ADDRESS=... raftline raftline list
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAFTLINE_HOME=/data

WORKDIR /app

# The distribution: every folder pyproject.toml maps into the one package `raftline`.
COPY pyproject.toml README.md ./
COPY raftline ./raftline
COPY workflows ./workflows
COPY activities ./activities
COPY verifiers ./verifiers
COPY examples ./examples
# The sandbox imports the workflow module afresh for every run: ship its bytecode, since
# PYTHONDONTWRITEBYTECODE (and a read-only install) keep the worker from writing it.
RUN pip install . \
    && python -m compileall -q "$(python -c 'import os, raftline; print(os.path.dirname(raftline.__file__))')" \
    && rm -rf /app/* \
    && useradd --create-home --uid 10001 raftline \
    && mkdir -p /data \
    && chown raftline /data

USER raftline
VOLUME ["/data"]

# The worker handles SIGTERM: in-flight tasks finish before it exits.
CMD ["raftline-worker"]

# raftline image: the worker by default; the same image runs the CLI and the codec server.
#   docker build -t raftline .
#   docker run --rm -e TEMPORAL_ADDRESS=host.docker.internal:7233 raftline
#   docker run --rm -e TEMPORAL_ADDRESS=... raftline python starter.py list
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAFTLINE_HOME=/data

WORKDIR /app

# The distribution: its top-level modules (*.py) and every package pyproject.toml lists.
COPY pyproject.toml README.md ./
COPY *.py ./
COPY workflows ./workflows
COPY activities ./activities
COPY verifiers ./verifiers
COPY benchmarks ./benchmarks
COPY raftline ./raftline
COPY examples ./examples
# The sandbox imports the workflow module afresh for every run: ship its bytecode, since
# PYTHONDONTWRITEBYTECODE (and a read-only /app) keep the worker from writing it.
RUN pip install . \
    && python -m compileall -q /app \
    && useradd --create-home --uid 10001 raftline \
    && mkdir -p /data \
    && chown raftline /data

USER raftline
VOLUME ["/data"]

# worker.py handles SIGTERM: in-flight tasks finish before it exits.
CMD ["python", "worker.py"]

# The streams image: every worker, service and one-shot job of docker-compose.yml runs `streams ...` from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so editing the source does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    > /tmp/requirements.txt && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY setup.py README.md ./
COPY streams ./streams
# A regular install, as from a wheel: the examples' topologies and contracts are package data, found wherever the
# package lives (`--topology orders`). The slim image has no C compiler, so the hot path is the pure-Python one
# (STREAMS_PURE_BUILD: not even an attempt; see setup.py).
RUN STREAMS_PURE_BUILD=1 pip install --no-deps . && rm -rf streams build ./*.egg-info \
    && useradd --create-home --uid 10001 streams \
    && mkdir -p /app/.streams \
    && chown streams /app/.streams

USER streams
# Worker state (RocksDB, one store per partition) lives in /app/.streams/state/<group>/<hostname>; it is a cache
# of the changelog topics, rebuilt by restore when a container is recreated.
EXPOSE 9400
CMD ["streams", "--help"]

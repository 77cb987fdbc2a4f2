# Conveyor broker image: `conveyor serve` as a non-root user, data in the /data volume.
# tests/e2e/test_image_install.py runs these install steps in a venv (no Docker engine there).
#
#   docker build -t conveyor .
#   docker run -p 7470:7470 -p 9470:9470 -v conveyor-data:/data \
#     -e CONVEYOR_AUTH_TOKEN=change-me conveyor

# -- build: a wheel without the benchmarks (bench/ is not copied), installed into a venv --
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY client_py ./client_py
COPY worker_sdk ./worker_sdk
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/conveyor \
 && /opt/conveyor/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[server]"

# -- runtime: the venv alone --
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin conveyor \
 && mkdir /data && chown conveyor:conveyor /data
COPY --from=build /opt/conveyor /opt/conveyor
# All interfaces inside the container only (the broker's own default is 127.0.0.1).
# Set a token (CONVEYOR_AUTH_TOKEN) before publishing the port anywhere but localhost.
ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CONVEYOR_LISTEN=0.0.0.0:7470 \
    CONVEYOR_METRICS_LISTEN=0.0.0.0:9470 \
    CONVEYOR_DATA_DIR=/data
USER conveyor
VOLUME ["/data"]
EXPOSE 7470 9470
# Health checks need no token; with TLS add --tls-ca (the probe dials 127.0.0.1).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["conveyor", "health", "--target", "127.0.0.1:7470"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["conveyor", "serve"]

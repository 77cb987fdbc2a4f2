# Conveyor broker image. Mirrors what scripts/serve does on a Debian machine.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY client_py ./client_py
COPY worker_sdk ./worker_sdk
COPY bench ./bench
RUN pip install --no-cache-dir '.[server]'
ENV CONVEYOR_LISTEN=0.0.0.0:7470 \
    CONVEYOR_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 7470
STOPSIGNAL SIGTERM
ENTRYPOINT ["conveyor", "serve"]

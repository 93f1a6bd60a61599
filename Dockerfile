# Dockerfile: one image holding every rollwave binary (producer, worker,
# poller, api, rollwavectl, devbroker, lagoon-sim); compose.yaml picks the binary
# per service with `command:`. Multi-stage: the build stage has the compiler
# and -dev packages, the runtime stage only the shared libraries, curl for
# healthchecks, and a non-root user. It holds no configuration or secret:
# everything comes from ROLLWAVE_* variables at run time.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        librdkafka-dev libhiredis-dev libcurl4-openssl-dev libpq-dev \
        libcmocka-dev libjansson-dev libmicrohttpd-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the binaries: the tests and benchmarks stay out of the image.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build -j"$(nproc)" --target \
        rollwave-producer rollwave-worker rollwave-poller rollwave-api \
        rollwavectl \
        rollwave-devbroker rollwave-lagoon-sim

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        librdkafka1 libhiredis0.14 libcurl4 libpq5 libjansson4 \
        libmicrohttpd12 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin rollwave
COPY --from=build /src/build/bin/ /usr/local/bin/
USER 10001:10001
# Each daemon serves /metrics and /healthz on ROLLWAVE_METRICS_PORT;
# rollwave-api serves /api/v1 and the dashboard on ROLLWAVE_API_PORT.
EXPOSE 9101 9102 9103 9104 8080
CMD ["rollwavectl", "--help"]

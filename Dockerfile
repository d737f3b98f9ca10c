# syntax=docker/dockerfile:1
# Conclave images. Targets:
#   conclave      (default) redb and PostgreSQL storage
#   conclave-fdb  built with the `fdb` feature, carrying FoundationDB's libfdb_c
#
#   docker build -t conclave .
#   docker build --target conclave-fdb -t conclave:fdb .
#   docker run -p 1999:1999 conclave dev          # reachable: the image listens on 0.0.0.0
#
# Builds keep cargo's registry and target directory in BuildKit cache mounts, so a source
# change recompiles Conclave's crates, not every dependency. Binaries are stripped. The
# images run as an unprivileged user (uid 10001) with /data as their working directory
# (where `conclave dev` keeps .conclave/), and check /readyz with `conclave probe`.
ARG FDB_VERSION=7.3.63

# The FoundationDB client library, from the official image of the same minor version.
FROM foundationdb/foundationdb:${FDB_VERSION} AS fdb

FROM rust:1.95-bookworm AS build
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin conclave && cp target/release/conclave /conclave

FROM rust:1.95-bookworm AS build-fdb
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=fdb /usr/lib/libfdb_c.so /usr/lib/libfdb_c.so
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    FDB_CLIENT_LIB_PATH=/usr/lib
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-fdb \
    cargo build --release --locked --features fdb --bin conclave \
    && cp target/release/conclave /conclave

FROM debian:bookworm-slim AS runtime
# CA roots for rediss:// and OTLP over https; an unprivileged user.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home conclave
WORKDIR /data
USER conclave
# Inside a container the client port must be reachable from outside it. Internal listeners
# (a node's relay, placement) stay on loopback unless set, and then need a cluster secret.
ENV CONCLAVE_HOST=0.0.0.0
EXPOSE 1999
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
    CMD ["conclave", "probe", "http://127.0.0.1:1999/readyz"]
ENTRYPOINT ["conclave"]

FROM runtime AS conclave-fdb
USER root
COPY --from=fdb /usr/lib/libfdb_c.so /usr/lib/libfdb_c.so
COPY --from=build-fdb /conclave /usr/local/bin/conclave
USER conclave

FROM runtime AS conclave
COPY --from=build /conclave /usr/local/bin/conclave

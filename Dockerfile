# Conclave images. Targets:
#   conclave      (default) redb and PostgreSQL storage
#   conclave-fdb  built with the `fdb` feature, carrying FoundationDB's libfdb_c
#
#   docker build -t conclave .
#   docker build --target conclave-fdb -t conclave:fdb .
ARG FDB_VERSION=7.3.63

# The FoundationDB client library, from the official image of the same minor version.
FROM foundationdb/foundationdb:${FDB_VERSION} AS fdb

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/conclave /conclave

FROM rust:1.95-bookworm AS build-fdb
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=fdb /usr/lib/libfdb_c.so /usr/lib/libfdb_c.so
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features fdb && cp target/release/conclave /conclave

FROM debian:bookworm-slim AS conclave-fdb
COPY --from=fdb /usr/lib/libfdb_c.so /usr/lib/libfdb_c.so
COPY --from=build-fdb /conclave /usr/local/bin/conclave
ENTRYPOINT ["conclave"]

FROM debian:bookworm-slim AS conclave
COPY --from=build /conclave /usr/local/bin/conclave
ENTRYPOINT ["conclave"]

# syntax=docker/dockerfile:1
#
# One image, one binary: `fleet run` (every component), `fleet run --target
# <component>`, `fleet migrate`, `fleet health`. Dependencies are built in a
# layer of their own (cargo-chef), so a source change rebuilds only the
# workspace. The runtime is distroless: no shell, no package manager, a
# non-root user, and a root filesystem that can be mounted read-only; the
# process writes only to /var/lib/fleet.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# cmake and g++ build the C parts of the TLS and SQLite crates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin fleet
COPY . .
RUN cargo build --release --locked --bin fleet \
    && install -D -m 0755 target/release/fleet /out/fleet \
    && install -d -m 0700 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/fleet /usr/local/bin/fleet
COPY --from=builder --chown=65532:65532 /out/data /var/lib/fleet
ENV FLEET_DATA_DIR=/var/lib/fleet
WORKDIR /var/lib/fleet
VOLUME ["/var/lib/fleet"]
USER 65532:65532
# HTTPS and HTTP (gateway); gRPC (auth, users, stats, transfer, notify);
# the admin listener (metrics, health; its port is set per component).
EXPOSE 8443 8080 50051 50052 50053 50054 50055 9090
STOPSIGNAL SIGTERM
# Asks the admin listener of whatever this container runs (FLEET_ADMIN_LISTEN).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/fleet", "health"]
ENTRYPOINT ["/usr/local/bin/fleet"]
CMD ["run"]

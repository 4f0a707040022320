# syntax=docker/dockerfile:1
# Both services from one build. Queries are checked against the committed
# .sqlx data, so the build needs no database. The cargo registry and the
# target directory live in BuildKit cache mounts: a change to the code
# rebuilds the workspace's crates, not its dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins -p order-service -p rewards-service \
    && mkdir -p /out \
    && cp target/release/order-service target/release/rewards-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/order-service /out/rewards-service /usr/local/bin/
USER 10001
# order-service listens on 8081, rewards-service on 8082 (LISTEN_ADDR).
EXPOSE 8081 8082
CMD ["order-service"]

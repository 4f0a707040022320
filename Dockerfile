# syntax=docker/dockerfile:1
# Both services and the operator CLI (`order-events`: audit, dlq, cdc resync)
# from one build, so that the CLI runs inside the services' containers, on
# the compose network. Queries are checked against the committed .sqlx data,
# so the build needs no database. The cargo registry and the target directory
# live in BuildKit cache mounts (BuildKit is the default builder of Docker
# Engine 23 and newer): a change to the code rebuilds the workspace's crates,
# not its dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins -p order-service -p rewards-service -p order-events-cli \
    && mkdir -p /out \
    && cp target/release/order-service target/release/rewards-service target/release/order-events /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/order-service /out/rewards-service /out/order-events /usr/local/bin/
USER 10001
# order-service listens on 8081, rewards-service on 8082 (LISTEN_ADDR).
EXPOSE 8081 8082
CMD ["order-service"]

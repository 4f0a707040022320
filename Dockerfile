# Both services from one build. Queries are checked against the committed
# .sqlx data, so the build needs no database.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bins -p order-service -p rewards-service

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/order-service /src/target/release/rewards-service /usr/local/bin/
USER 10001

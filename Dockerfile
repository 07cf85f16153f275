# Multi-stage build of the revpulse binary.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin revpulse

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates zlib1g curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/revpulse /usr/local/bin/revpulse
COPY deploy/revpulse.toml /etc/revpulse/revpulse.toml
# The state directory (a volume in docker-compose.yml), writable by the runtime user.
RUN mkdir -p /var/lib/revpulse && chown nobody /var/lib/revpulse
EXPOSE 8080
USER nobody
ENTRYPOINT ["/usr/local/bin/revpulse"]
CMD ["run", "--config", "/etc/revpulse/revpulse.toml"]

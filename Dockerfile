# Multi-stage build: compile in the Rust image, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
COPY tests ./tests
COPY examples ./examples
COPY deploy ./deploy
RUN cargo build --release --locked --bin tollgate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY examples/tollgate.toml /etc/tollgate/tollgate.toml
USER 10001
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.toml"]

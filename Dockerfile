# The two ethrpc binaries in one small image, running as non-root.
#   docker build -t ghcr.io/your-org/ethrpc:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ethrpc-exporter -p ethrpc-actuator --bin ethrpc-exporter --bin ethrpc-actuator

# distroless: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ethrpc-exporter /src/target/release/ethrpc-actuator /usr/local/bin/
USER 10001:10001
EXPOSE 9787 9788
ENTRYPOINT []
CMD ["ethrpc-exporter", "--help"]

# The imgate image: one binary, which the operator runs (`imgate operator run`) and so do
# the tenants' dataplanes (`imgate up`). Build it from the repository's root:
#   docker build -t imgate:dev .
# It runs as the non-root user 65532 the chart's pods ask for, on a read-only root
# filesystem; the binary needs nothing but glibc and the system's CA roots.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin imgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/imgate /usr/local/bin/imgate
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/imgate"]

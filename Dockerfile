# predcache on Debian 12: build stage with the -dev packages, runtime stage with the libraries.
# The gRPC messages are generated from proto/ by protoc-c (the well-known types they import
# come from libprotobuf-dev).
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        make gcc libc6-dev pkg-config libevent-dev libhiredis-dev libcurl4-openssl-dev \
        libjson-c-dev libssl-dev zlib1g-dev libnghttp2-dev libprotobuf-c-dev \
        protobuf-c-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY include ./include
COPY src ./src
COPY proto ./proto
RUN make CI=1

# Runtime: predcache and its shared libraries only (nothing here runs Python: the
# entrypoint is the binary, and there is no healthcheck script).
FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libevent-2.1-7 libevent-openssl-2.1-7 libhiredis0.14 libcurl4 libjson-c5 libssl3 zlib1g \
        libnghttp2-14 libprotobuf-c1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/predcache /usr/local/bin/predcache
COPY conf/predcache.conf /etc/predcache/predcache.conf
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/predcache"]
CMD ["-c", "/etc/predcache/predcache.conf"]

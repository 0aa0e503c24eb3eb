# syntax=docker/dockerfile:1.7
#
# One Dockerfile, five images. Build one with its target:
#
#   docker buildx build --target gateway   -t mp3converter/gateway:0.1.0   .
#   docker buildx build --target auth      -t mp3converter/auth:0.1.0      .
#   docker buildx build --target storage   -t mp3converter/storage:0.1.0   .
#   docker buildx build --target converter -t mp3converter/converter:0.1.0 .
#   docker buildx build --target notifier  -t mp3converter/notifier:0.1.0  .
#
# The `builder` stage compiles all five binaries in one `cargo build`, so the five builds share
# one compilation: BuildKit runs the stage once and reuses it for every target whose inputs did
# not change. Dependencies stay compiled between builds in BuildKit cache mounts (the cargo
# registry and the target directory), so a change to one service recompiles only our crates.
#
# Runtime images: distroless `cc` (glibc, libgcc, CA certificates; no shell, no package
# manager) for gateway, auth, storage and notifier; Debian slim with ffmpeg for the converter,
# which runs ffmpeg/ffprobe as child processes. Every image runs as the numeric user 65532.
#
# Base images are pinned by version tag. Distroless publishes no version tags, only moving ones
# (`nonroot`) and digests: pin it by digest for releases, see k8s/README.md ("Pin the base
# images"), e.g. --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>.
# All three bases are Debian 12 (bookworm), so the binaries run against the glibc they were
# linked with.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG CONVERTER_BASE_IMAGE=debian:bookworm-20251229-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# The -sys crates (ring, the bundled libsqlite3-sys) compile C with the gcc that the rust:slim
# image already has; no cmake, since nothing builds aws-lc-sys any more. No OpenSSL: every TLS
# client uses rustls on ring. No protoc: the proto crate compiles the contracts with protox.
WORKDIR /src
COPY . .

# `--locked`: the image is built from exactly the committed Cargo.lock.
# The target dir is a cache mount (it does not end up in the image), so the binaries are copied
# out of it into /out within the same RUN.
RUN --mount=type=cache,id=mp3converter-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=mp3converter-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=mp3converter-target,target=/src/target,sharing=locked \
    cargo build --profile dist --locked \
      -p gateway -p auth -p storage -p converter -p notifier \
 && mkdir -p /out \
 && for bin in gateway auth storage converter notifier; do \
      cp "target/dist/$bin" "/out/$bin"; \
    done

# An empty directory owned by the runtime user, copied to /tmp/data in each image so that
# `docker run` without Kubernetes has a writable DATA_DIR (on Kubernetes an emptyDir is mounted
# over /tmp and the root filesystem is read-only).
RUN mkdir -p /skel/tmp/data && chown -R 65532:65532 /skel/tmp && chmod 1777 /skel/tmp

# ---------------------------------------------------------------------------------------------
# The four services without child processes.
FROM ${RUNTIME_IMAGE} AS distroless-base
COPY --from=builder --chown=65532:65532 /skel/tmp /tmp
# DATA_DIR only matters for the embedded defaults (SQLite, local files, queue file, outbox),
# which the cluster does not use; it must still point somewhere writable.
ENV DATA_DIR=/tmp/data
USER 65532:65532
WORKDIR /tmp

FROM distroless-base AS gateway
COPY --from=builder /out/gateway /usr/local/bin/gateway
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM distroless-base AS auth
COPY --from=builder /out/auth /usr/local/bin/auth
# gRPC, then the ops endpoint (/healthz, /readyz, /metrics).
EXPOSE 50051 9092
ENTRYPOINT ["/usr/local/bin/auth"]

FROM distroless-base AS storage
COPY --from=builder /out/storage /usr/local/bin/storage
EXPOSE 50052 9093
ENTRYPOINT ["/usr/local/bin/storage"]

FROM distroless-base AS notifier
COPY --from=builder /out/notifier /usr/local/bin/notifier
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/notifier"]

# ---------------------------------------------------------------------------------------------
# The converter runs ffmpeg and ffprobe, so it needs Debian's ffmpeg (with libmp3lame) and
# therefore a full userland. ca-certificates: for amqps:// and TLS to storage, should it be used.
#
# Mesa's OpenGL drivers and the LLVM and Z3 they compile shaders with (libgl1-mesa-dri,
# libllvm15, libz3-4: about 160 MB, a fifth of the image) come in through SDL's display support.
# ffmpeg and ffprobe do not link them: they are loaded only to draw on a screen, which a
# converter never has. They are purged (forcing past the dependency, so apt would ask for them
# back in a derived image), and the build fails if either tool then lacks a library it links.
FROM ${CONVERTER_BASE_IMAGE} AS converter
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && dpkg --purge --force-depends libgl1-mesa-dri libllvm15 libz3-4 \
 && ldd /usr/bin/ffmpeg /usr/bin/ffprobe > /tmp/ldd.txt \
 && if grep 'not found' /tmp/ldd.txt; then exit 1; fi \
 && rm /tmp/ldd.txt \
 && ffmpeg -hide_banner -version >/dev/null \
 && ffprobe -hide_banner -version >/dev/null \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nonroot \
 && install -d -o 65532 -g 65532 /work /tmp/data
COPY --from=builder /out/converter /usr/local/bin/converter
# WORK_DIR: each job's temp directory (the video and its MP3); on Kubernetes an emptyDir sized
# for the largest video is mounted here.
ENV WORK_DIR=/work \
    DATA_DIR=/tmp/data
USER 65532:65532
WORKDIR /work
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/converter"]

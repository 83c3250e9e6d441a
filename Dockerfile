# syntax=docker/dockerfile:1
#
# ferroserve's container image. Build from the repository root:
#
#   docker build -t ferroserve:0.1.0 .
#   docker build -t ferroserve:0.1.0-tf --build-arg WITH_TENSORFLOW=true .
#
# Stages: `builder` compiles the release binary with the lockfile; `onnxruntime`
# takes ONNX Runtime's shared library from the pinned `onnxruntime` wheel, exactly as
# scripts/setup.sh does; `tensorflow` does the same for TensorFlow's C libraries when
# WITH_TENSORFLOW=true (and leaves an empty directory otherwise); the final stage is
# a slim Debian with the binary, the libraries and a non-root user. README.md,
# "Running in production", gives the image's size, users, volumes and environment.
#
# The build and run stages are the same Debian release (bookworm), so the binary
# finds the glibc it was linked against.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG PYTHON_VERSION=3.11
# The ONNX Runtime release the `ort` crate's API level (api-31) is built for; the
# same pin as python/requirements-models.txt.
ARG ONNXRUNTIME_VERSION=1.31.1

# --- builder: the release binary -------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# --locked: the dependencies are exactly Cargo.lock's. The release profile keeps
# line tables for backtraces (Cargo.toml); the image drops the DWARF sections but
# keeps the symbol table, so a panic's backtrace still names its functions.
# The cache mounts keep the registry and target/ between builds on one machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --bin ferroserve \
    && install -D -m 0755 target/release/ferroserve /out/ferroserve

# --- onnxruntime: the shared library from the pinned wheel -------------------------
# The wheel matches the build platform (x86_64 or aarch64); only its library is kept.
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS onnxruntime
ARG ONNXRUNTIME_VERSION
RUN pip install --no-cache-dir --no-deps --disable-pip-version-check \
        --target /wheel "onnxruntime==${ONNXRUNTIME_VERSION}" \
    && install -D -m 0755 \
        "/wheel/onnxruntime/capi/libonnxruntime.so.${ONNXRUNTIME_VERSION}" \
        "/out/libonnxruntime.so.${ONNXRUNTIME_VERSION}"

# --- tensorflow: TensorFlow's C libraries, only with WITH_TENSORFLOW=true ----------
# For SavedModels (issue 16). The tensorflow-cpu wheel (about 270 MB) carries
# TensorFlow's C API in two libraries: libtensorflow_framework.so.2 (tensors,
# status) and libtensorflow_cc.so.2 (sessions, SavedModel loading), which needs the
# first, so both go in one directory that ldconfig knows. Nothing else of the wheel
# is kept. tensorflow-cpu has x86_64 wheels only.
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS tensorflow
ARG WITH_TENSORFLOW=false
ARG TENSORFLOW_VERSION=2.21.0
RUN set -eu; \
    mkdir -p /out; \
    case "${WITH_TENSORFLOW}" in \
      true) \
        pip install --no-cache-dir --no-deps --disable-pip-version-check \
            --target /wheel "tensorflow-cpu==${TENSORFLOW_VERSION}"; \
        install -m 0755 /wheel/tensorflow/libtensorflow_framework.so.2 \
            /wheel/tensorflow/libtensorflow_cc.so.2 /out/; \
        rm -rf /wheel ;; \
      false) ;; \
      *) echo "WITH_TENSORFLOW must be true or false, not '${WITH_TENSORFLOW}'" >&2; exit 1 ;; \
    esac

# --- runtime ----------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG ONNXRUNTIME_VERSION
# ca-certificates: TLS to PostgreSQL, MySQL and the job sources. The binary needs
# only glibc and libgcc_s, and ONNX Runtime (and TensorFlow) libstdc++ as well; the
# slim image already has those three, libgcc-s1 and libstdc++6 are named so that a
# change of base image cannot drop them. Versions are not pinned (hadolint DL3008):
# the Debian release is, and within it these follow its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgcc-s1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric user and group, so Kubernetes' runAsNonRoot can check it and
# volume ownership (fsGroup) is predictable. /models is the default model
# repository (mount models there); /var/lib/ferroserve is the state directory (the
# default SQLite metadata store, jobs' data), kept out of the repository so the
# repository can be mounted read-only.
RUN groupadd --system --gid 10001 ferroserve \
    && useradd --system --uid 10001 --gid ferroserve --no-create-home \
        --home-dir /var/lib/ferroserve --shell /usr/sbin/nologin ferroserve \
    && install -d -o ferroserve -g ferroserve -m 0755 /models /var/lib/ferroserve

COPY --from=builder /out/ferroserve /usr/local/bin/ferroserve
COPY --from=onnxruntime /out/ /usr/local/lib/ferroserve/
# Empty unless WITH_TENSORFLOW=true; ldconfig makes the TensorFlow libraries
# loadable by name (dlopen("libtensorflow_cc.so.2")) from /usr/local/lib/ferroserve.
COPY --from=tensorflow /out/ /usr/local/lib/ferroserve/
# TF Serving's command lines (KServe's kserve-tensorflow-serving runtime runs
# /usr/bin/tensorflow_model_server) start ferroserve, which reads TF Serving's flags
# when called by that name.
RUN echo /usr/local/lib/ferroserve > /etc/ld.so.conf.d/ferroserve.conf \
    && ldconfig \
    && ln -s /usr/local/bin/ferroserve /usr/bin/tensorflow_model_server \
    && ln -s /usr/local/bin/ferroserve /usr/local/bin/tensorflow_model_server

ENV ORT_DYLIB_PATH=/usr/local/lib/ferroserve/libonnxruntime.so.${ONNXRUNTIME_VERSION} \
    FERROSERVE_TENSORFLOW_PATH=/usr/local/lib/ferroserve \
    FERROSERVE_MODEL_REPOSITORY=/models \
    FERROSERVE_STATE_DIR=/var/lib/ferroserve

USER 10001:10001
WORKDIR /var/lib/ferroserve
# 8500: gRPC, 8501: REST (TF Serving's ports); /metrics is on the REST port.
EXPOSE 8500 8501

# No HEALTHCHECK: the image carries no HTTP client (curl would add about 10 MB of
# libraries to a server that needs none), the probe would have to follow the port
# and TLS flags the container is started with, and Kubernetes ignores HEALTHCHECK in
# favour of its own probes (GET /v2/health/live and /v2/health/ready, as the Helm
# chart sets). Under plain Docker, give one with `docker run --health-cmd`.

# ferroserve handles SIGTERM itself (not ready, drain for --shutdown-timeout, exit),
# so it runs as PID 1 without an init. No ENTRYPOINT, so that both
# `docker run IMAGE ferroserve serve …` and `docker run IMAGE tensorflow_model_server …`
# work as they read.
CMD ["ferroserve", "serve"]

# syntax=docker/dockerfile:1
# extauthz image: multi-stage, slim, non-root (uid 65532), read-only root filesystem.
#   docker build -t extauthz:dev .
#   docker run --rm --read-only --tmpfs /tmp -v "$PWD/config.yaml:/etc/extauthz/config.yaml:ro" extauthz:dev

ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: build the wheel and install it with its dependencies into /opt/venv ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY extauthz ./extauthz
# Every dependency ships manylinux wheels for CPython 3.11: no compiler is needed, and
# --only-binary makes a missing wheel an error rather than a silent source build.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --only-binary=:all: /wheels/extauthz-*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# -- runtime: the interpreter, the venv, nothing else ------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="extauthz" \
      org.opencontainers.image.description="Envoy external authorization service (gRPC and HTTP): decrypts JWE, verifies JWTs, keys from Kubernetes Secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
# Bytecode was compiled in the builder; nothing is written at run time except under /tmp
# (an emptyDir in Kubernetes), so the root filesystem can be mounted read-only.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
COPY --from=builder /opt/venv /opt/venv
USER 65532:65532
WORKDIR /tmp
# 9001: gRPC (ext_authz Check + grpc.health.v1); 9002: Envoy's HTTP authorization
# protocol (when listen.http_authz is set); 9090: HTTP /metrics /healthz /readyz
EXPOSE 9001 9002 9090
ENTRYPOINT ["extauthz"]
CMD ["serve", "--config", "/etc/extauthz/config.yaml"]

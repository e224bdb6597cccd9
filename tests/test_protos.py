"""The committed stubs must be what `make protos` generates from protos/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_are_fresh(tmp_path):
    protos = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "protos").glob("*.proto"))
    assert protos, "no .proto files"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos], cwd=ROOT, check=True)
    generated = sorted((tmp_path / "protos").iterdir())
    assert len(generated) == 3 * len(protos)
    stale = [g.name for g in generated if g.read_bytes() != (ROOT / "protos" / g.name).read_bytes()]
    assert not stale, f"stale generated stubs (run `make protos`): {stale}"


def test_package_and_enum_conventions():
    from codeindex_common.pb import common_pb2, embed_pb2, parser_pb2, store_pb2

    for mod in (common_pb2, embed_pb2, parser_pb2, store_pb2):
        assert mod.DESCRIPTOR.package == "codeindex.v1"
    kind = common_pb2.DESCRIPTOR.enum_types_by_name["ChunkKind"]
    assert kind.values_by_number[0].name == "CHUNK_KIND_UNSPECIFIED"

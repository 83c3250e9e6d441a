#!/usr/bin/env python3
"""Checks proto/ against the descriptors shipped in the real client packages.

usage: check-protos.py [--descriptor-set FILE] [--write-set FILE]

Compiles proto/ (with grpc_tools, or reads a set compiled before with --descriptor-set),
then compares every message and enum in it whose full name the installed client
packages also define: tritonclient (package inference) and tensorflow-protobuf /
tensorflow-serving-api (packages tensorflow, tensorflow.serving, tensorflow.error).
Each field must have the same name, number, type, label, message/enum type and oneof;
each enum value the same number. Fields the client packages have and proto/ leaves out
must be `reserved` in proto/. Exits non-zero on any difference or when nothing was compared.
Run the TF side with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (see setup-grpc-clients.sh).
"""
import argparse
import importlib
import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
REFERENCE_MODULES = [
    "tritonclient.grpc.service_pb2",
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.tsl.protobuf.error_codes_pb2",
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
]


def compile_set(out):
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", "--include_imports",
                      f"--descriptor_set_out={out}", *PROTOS])
    if rc != 0:
        sys.exit(f"protoc failed on proto/ ({rc})")


def walk(prefix, messages, enums, out_msgs, out_enums):
    for e in enums:
        out_enums[f"{prefix}.{e.name}"] = e
    for m in messages:
        name = f"{prefix}.{m.name}"
        out_msgs[name] = m
        walk(name, m.nested_type, m.enum_type, out_msgs, out_enums)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--descriptor-set")
    ap.add_argument("--write-set")
    args = ap.parse_args()
    path = args.descriptor_set
    if path is None:
        path = args.write_set or tempfile.mktemp(suffix=".pb")
        compile_set(path)
    fds = descriptor_pb2.FileDescriptorSet.FromString(pathlib.Path(path).read_bytes())
    ours_msgs, ours_enums = {}, {}
    for f in fds.file:
        if f.name.startswith("google/protobuf/"):
            continue
        walk(f.package, f.message_type, f.enum_type, ours_msgs, ours_enums)

    loaded = []
    for mod in REFERENCE_MODULES:
        try:
            importlib.import_module(mod)
            loaded.append(mod)
        except ImportError:
            pass
    pool = descriptor_pool.Default()
    problems, compared = [], 0
    for name, ours in ours_msgs.items():
        try:
            ref = pool.FindMessageTypeByName(name)
        except KeyError:
            continue
        compared += 1
        ref_proto = descriptor_pb2.DescriptorProto()
        ref.CopyToProto(ref_proto)
        reserved = {n for r in ours.reserved_range for n in range(r.start, r.end)}
        ours_fields = {f.number: f for f in ours.field}
        for rf in ref_proto.field:
            of = ours_fields.pop(rf.number, None)
            if of is None:
                if rf.number not in reserved:
                    problems.append(f"{name}: field {rf.name} = {rf.number} missing and not reserved")
                continue
            for attr in ("name", "type", "label", "type_name"):
                if getattr(of, attr) != getattr(rf, attr) and not (attr == "type_name" and
                                                                    of.type_name.lstrip(".") == rf.type_name.lstrip(".")):
                    problems.append(f"{name}.{rf.name}: {attr} {getattr(of, attr)!r} != {getattr(rf, attr)!r}")
            o_oneof = ours.oneof_decl[of.oneof_index].name if of.HasField("oneof_index") else None
            r_oneof = ref_proto.oneof_decl[rf.oneof_index].name if rf.HasField("oneof_index") else None
            if o_oneof != r_oneof:
                problems.append(f"{name}.{rf.name}: oneof {o_oneof!r} != {r_oneof!r}")
        for extra in ours_fields.values():
            problems.append(f"{name}: field {extra.name} = {extra.number} is not in the public definition")
    for name, ours in ours_enums.items():
        try:
            ref = pool.FindEnumTypeByName(name)
        except KeyError:
            continue
        compared += 1
        want = {v.name: v.number for v in ref.values}
        got = {v.name: v.number for v in ours.value}
        if want != got:
            problems.append(f"enum {name}: {sorted(set(got.items()) ^ set(want.items()))}")
    print(f"compared {compared} messages/enums of proto/ with {', '.join(loaded) or 'nothing'}")
    for p in problems:
        print("MISMATCH", p)
    if problems or compared == 0:
        sys.exit(1)
    print("proto/ matches the client packages")


if __name__ == "__main__":
    main()

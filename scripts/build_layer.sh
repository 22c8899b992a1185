#!/usr/bin/env bash
# Build what template.yaml deploys, for Lambda arm64 / python3.12:
#   build/layer      DepsLayer: polars (no pyarrow), pydantic, pyyaml, xxhash, numpy; .so stripped, .pyc precompiled
#   build/layer-api  ApiLayer: fastapi, mangum (on top of DepsLayer)
#   build/app        the function code (definitions, engine, datasets, handlers, measures), precompiled
# Needs PyPI (wheels for manylinux2014_aarch64) and a Python 3.12 to write cpython-312 .pyc files: /var/task and
# /opt are read-only on Lambda, so modules shipped without .pyc are recompiled on every cold start.
# boto3 is not packaged: the runtime provides it.
#   PLAT=manylinux2014_x86_64 STRIP=strip scripts/build_layer.sh     # x86_64 variant
set -euo pipefail
cd "$(dirname "$0")/.."

PLAT=${PLAT:-manylinux2014_aarch64}
OUT=${OUT:-build}
find_py312() {  # a python3.12 that really runs (a pyenv shim may exist and fail)
  for c in "${PY312:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$c"; return; }
  done
}
PY312=$(find_py312)
[ -n "$PY312" ] && "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
  || { echo "need a python3.12 (set PY312=...) to precompile for the python3.12 runtime" >&2; exit 2; }
if [ -z "${STRIP:-}" ]; then
  case "$PLAT" in
    *aarch64*) STRIP=$(command -v aarch64-linux-gnu-strip || true) ;;
    *) STRIP=$(command -v strip || true) ;;
  esac
fi
# the ranges of pyproject.toml (the mirror may not carry the exact versions .venv runs); resolved versions are printed
DEPS=("polars>=2.1,<3" "pydantic>=2.13,<3" "pyyaml>=6.0" "xxhash>=3.4" "numpy>=2.0")
API=("fastapi>=0.160" "mangum>=0.22")

pip_target() {  # pip_target DIR PKG...
  local dir=$1; shift
  rm -rf "$dir"; mkdir -p "$dir/python"
  "$PY312" -m pip install -q --disable-pip-version-check --target "$dir/python" \
    --platform "$PLAT" --implementation cp --python-version 3.12 --only-binary=:all: --no-compile "$@"
  rm -rf "$dir/python/bin"
  find "$dir/python" -name '__pycache__' -type d -prune -exec rm -rf {} +
}

shrink() {  # strip shared objects, then precompile
  local dir=$1
  if [ -n "$STRIP" ]; then
    find "$dir" -name '*.so*' -type f -print0 | xargs -0 -r "$STRIP" --strip-unneeded
  else
    echo "warning: no strip for $PLAT (apt-get install binutils-aarch64-linux-gnu); shared objects left as is" >&2
  fi
  "$PY312" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$dir" >/dev/null
}

size() { du -sb "$1" | awk -v n="$1" '{printf "%-16s %7.1f MiB (%4.1f%% of the 250 MiB unzipped limit)\n", n, $1/1048576, 100*$1/262144000}'; }

echo "== DepsLayer ($PLAT): ${DEPS[*]}"
pip_target "$OUT/layer" "${DEPS[@]}"
raw=$(du -sb "$OUT/layer" | cut -f1)
echo "   resolved: $(ls "$OUT/layer/python" | sed -n "s/\.dist-info$//p" | tr "\n" " ")"
shrink "$OUT/layer"
echo "   raw $((raw / 1048576)) MiB -> $(du -sb "$OUT/layer" | awk '{print int($1/1048576)}') MiB stripped + .pyc (strip: ${STRIP:-none})"
if find "$OUT/layer/python" -maxdepth 1 -iname 'pyarrow*' | grep -q .; then
  echo "error: pyarrow slipped into the worker layer" >&2; exit 1
fi

echo "== ApiLayer ($PLAT): ${API[*]}"
pip_target "$OUT/layer-api" "${API[@]}"
shrink "$OUT/layer-api"

echo "== app code"
rm -rf "$OUT/app"; mkdir -p "$OUT/app"
for pkg in definitions engine datasets handlers measures; do
  rsync -a --exclude '__pycache__' --exclude '*.pyc' "$pkg" "$OUT/app/" 2>/dev/null \
    || { cp -r "$pkg" "$OUT/app/"; find "$OUT/app/$pkg" -name '__pycache__' -type d -prune -exec rm -rf {} +; }
done
"$PY312" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$OUT/app" >/dev/null

echo "== sizes"
size "$OUT/layer"; size "$OUT/layer-api"; size "$OUT/app"
total=$(du -sbc "$OUT/layer" "$OUT/app" | tail -1 | cut -f1)
echo "worker function + DepsLayer: $((total / 1048576)) MiB of 250 MiB"
total=$(du -sbc "$OUT/layer" "$OUT/layer-api" "$OUT/app" | tail -1 | cut -f1)
echo "api function + both layers:  $((total / 1048576)) MiB of 250 MiB"
[ "$total" -lt 262144000 ] || { echo "error: over the Lambda unzipped size limit" >&2; exit 1; }

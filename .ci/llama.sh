# Sourced by .ci/run (or run with bash): llama.cpp's OpenAI-compatible server, built from the
# llama.cpp source that the llama-cpp-python sdist on PyPI vendors, and a tiny random-weight
# GGUF model generated here (gguf + numpy from PyPI; no model download). Both are cached under
# $STRATUS_LLAMA_DIR, so only the first run on a machine builds (about 5 minutes on 2 cores).
# Exports STRATUS_TEST_LLAMA_SERVER and STRATUS_TEST_LLAMA_MODEL for the gateway's e2e test.

STRATUS_LLAMA_DIR="${STRATUS_LLAMA_DIR:-/var/tmp/stratus-llama}"
LLAMA_CPP_PYTHON_VERSION=0.3.16

install_llama() {
  local dir="$STRATUS_LLAMA_DIR" here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  mkdir -p "$dir"
  if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q 'gguf==0.19.0' 'numpy>=1.26'
  fi
  if [ ! -x "$dir/build/bin/llama-server" ]; then
    command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake >/dev/null; }
    command -v g++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
    rm -rf "$dir/src" && mkdir -p "$dir/src"
    "$dir/venv/bin/pip" download -q --no-deps --no-binary :all: \
      "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$dir/src"
    tar -xzf "$dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$dir/src"
    local llama="$dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    cmake -S "$llama" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
      -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=ON >"$dir/cmake.log" 2>&1
    cmake --build "$dir/build" --target llama-server -j"$(nproc)" >>"$dir/cmake.log" 2>&1 \
      || { tail -30 "$dir/cmake.log" >&2; return 1; }
  fi
  if [ ! -s "$dir/tiny.gguf" ]; then
    "$dir/venv/bin/python" "$here/tiny_gguf.py" "$dir/tiny.gguf"
  fi
  export STRATUS_TEST_LLAMA_SERVER="$dir/build/bin/llama-server"
  export STRATUS_TEST_LLAMA_MODEL="$dir/tiny.gguf"
}

# Run as a script (not sourced), stop at the first failure.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
fi
install_llama

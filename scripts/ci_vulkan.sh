#!/usr/bin/env bash
# CI's Vulkan step (issue 21): the Vulkan kit (scripts/vulkan_sdk.sh), a
# second, Vulkan-enabled wheel built in build/vulkan (llama.cpp's tools in
# build/vulkan/bin), installed into build/vulkan/site, and the device tests
# (tests/test_vulkan.py) on it, on lavapipe listed twice (Vulkan0, Vulkan1).
#
# Run from .ci/run inside its virtual environment (pytest and the test
# requirements installed); the main install is not touched. Exit status: 0
# when the device tests passed; 3 when the kit's packages could not be
# fetched (offline, no apt mirror: only the first run needs one, later runs
# reuse the cached kit), so nothing was built or tested (.ci/run reports that
# as SKIPPED); anything else is a failure, with a message naming the step.
# LLAMA_CFFI_CI_VULKAN=0 in .ci/run leaves the step out.
#
# --build-only: the kit and the wheel, no tests (scripts/gpu_check.sh
# --backend vulkan builds with it).
#
# The log shows the devices in use: -rP prints what the passed tests printed
# (system_info with Vulkan0/Vulkan1, the buffers of the splits), and only
# that (--show-capture=stdout leaves out their captured llama.cpp log).
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1
start=$(date +%s)
step() { echo "ci_vulkan: $*" >&2; }

step "Vulkan kit"
kit_rc=0
kit_env="$(scripts/vulkan_sdk.sh)" || kit_rc=$?
if [ "$kit_rc" -eq 3 ]; then
    step "SKIPPED: the Vulkan kit's packages could not be fetched (no apt mirror?); no Vulkan build, no device tests"
    exit 3
elif [ "$kit_rc" -ne 0 ]; then
    step "FAILED: the Vulkan kit could not be set up (messages above)"
    exit 1
fi
eval "$kit_env"
export GGML_VK_VISIBLE_DEVICES=0,0

step "Vulkan wheel (build/vulkan)"
rm -rf build/vulkan/wheels build/vulkan/site
CMAKE_ARGS="$LLAMA_CFFI_VULKAN_CMAKE_ARGS" python -m pip wheel . --no-deps -w build/vulkan/wheels \
    -C build-dir=build/vulkan -C cmake.define.LLAMA_CFFI_BUILD_TOOLS=ON
python -m pip install --no-deps --target build/vulkan/site build/vulkan/wheels/llama_cffi-*.whl
built=$(( $(date +%s) - start ))
if [ "$build_only" = 1 ]; then
    step "built in ${built} s: build/vulkan/site (package), build/vulkan/bin (llama.cpp's tools)"
    exit 0
fi

export PYTHONPATH="$PWD/build/vulkan/site"
export LLAMA_CFFI_TOOLS_DIR="$PWD/build/vulkan/bin"
# the tests run (and fail) even if this import were not the Vulkan build
export LLAMA_CFFI_TEST_VULKAN=1
python -c "import llama_cffi as lc; print(lc.__file__); print(lc.system_info())"
step "device tests"
tests_start=$(date +%s)
python -m pytest -m vulkan tests/test_vulkan.py tests/test_vulkan_features.py -v \
    -rP --show-capture=stdout -p no:cacheprovider
step "build ${built} s, device tests $(( $(date +%s) - tests_start )) s, total $(( $(date +%s) - start )) s"

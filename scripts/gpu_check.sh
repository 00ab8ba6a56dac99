#!/usr/bin/env bash
# GPU check (issue 21): on a GPU machine, in a few minutes, whether a GPU build
# of llama_cffi runs on the device and how it compares with llama.cpp's own
# tools from the same build. Prints one table (benchmarks/gpu_check.py).
#
#   scripts/gpu_check.sh --backend cuda --wheel dist/llama_cffi-*.whl --tools DIR
#   scripts/gpu_check.sh --backend vulkan            # builds on the spot first
#   scripts/gpu_check.sh --backend vulkan --quick    # here, on lavapipe
#
# Options:
#   --backend cuda|vulkan  the backend the build must use (required)
#   --wheel PATH           a llama-cffi wheel to check (repeatable: a core wheel
#                          and its backend plugin wheel); installed with
#                          --no-deps into <work>/site, nothing else touched
#   --tools DIR            llama.cpp's tools (llama-completion, llama-bench,
#                          llama-batched-bench) from the SAME build as the
#                          wheel: the bin/ of its build folder. Default: with
#                          --wheel none (required), else the build's bin/
#   --model NAME|PATH      default smollm2-135m (a GPU machine without network
#                          needs a GGUF path, or the model cache copied over)
#   --quick                small token counts, for lavapipe (Mesa's Vulkan
#                          driver on the CPU; its figures are not GPU speed)
#   --work DIR             folder for the install (default build/gpu-check)
#
# Without --wheel it builds: vulkan with scripts/ci_vulkan.sh --build-only
# (the lavapipe kit of scripts/vulkan_sdk.sh unless VULKAN_SDK is set: then
# the system's Vulkan SDK and driver), cuda with the NVIDIA toolchain of
# scripts/build_cuda.sh --kit-only and -DGGML_CUDA=ON (CMAKE_CUDA_ARCHITECTURES
# from --arch LIST or $LLAMA_CFFI_CUDA_ARCH, default 90-real) with the tools.
# Python needs numpy, cffi and gguf (the MoE model); the check never fetches
# them. Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
say() { echo "gpu_check: $*" >&2; }
die() { say "$*"; exit 1; }

backend="" tools="" model="smollm2-135m" quick=() work="build/gpu-check"
arch="${LLAMA_CFFI_CUDA_ARCH:-90-real}"
wheels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) backend="$2"; shift 2 ;;
        --wheel) wheels+=("$2"); shift 2 ;;
        --tools) tools="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        --quick) quick=(--quick); shift ;;
        --work) work="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        *) die "unknown option $1 (see the head of $0)" ;;
    esac
done
case "$backend" in
    cuda|vulkan) ;;
    *) die "--backend cuda or --backend vulkan is required" ;;
esac
python -c "import numpy, cffi, gguf" 2>/dev/null \
    || die "this Python lacks numpy, cffi or gguf: install them first (pip install numpy cffi gguf)"

if [ "$backend" = vulkan ] && [ -z "${VULKAN_SDK:-}" ]; then
    # the lavapipe kit (driver, loader): what a machine without a Vulkan GPU runs
    if kit="$(scripts/vulkan_sdk.sh)"; then
        eval "$kit"
        export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
    else
        say "no lavapipe kit (scripts/vulkan_sdk.sh failed): using the system's Vulkan driver"
    fi
fi

start=$(date +%s)
if [ ${#wheels[@]} -gt 0 ]; then
    [ -n "$tools" ] || die "--tools DIR is required with --wheel: llama.cpp's tools of the same build"
    rm -rf "$work/site"
    python -m pip install --no-deps --no-index --target "$work/site" "${wheels[@]}" >&2 \
        || die "the wheel(s) could not be installed"
    site="$work/site"
elif [ "$backend" = vulkan ]; then
    say "building the Vulkan wheel (scripts/ci_vulkan.sh --build-only)"
    scripts/ci_vulkan.sh --build-only || die "the Vulkan build failed (messages above)"
    site="build/vulkan/site"
    tools="${tools:-build/vulkan/bin}"
else
    say "building the CUDA wheel with llama.cpp's tools (arch $arch) in $work/cuda"
    kit_env="$(scripts/build_cuda.sh --kit-only)" || die "the CUDA toolkit could not be set up"
    eval "$kit_env"
    rm -rf "$work/wheels" "$work/site"
    python -m pip wheel . --no-deps --no-build-isolation -w "$work/wheels" \
        -C build-dir="$work/cuda" -C cmake.define.LLAMA_CFFI_BUILD_TOOLS=ON \
        -C cmake.define.GGML_CUDA=ON -C cmake.define.GGML_NATIVE=OFF \
        -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" \
        -C cmake.define.CMAKE_CUDA_COMPILER="$CUDACXX" >&2 \
        || die "the CUDA build failed (messages above)"
    python -m pip install --no-deps --target "$work/site" "$work"/wheels/llama_cffi-*.whl >&2
    site="$work/site"
    tools="${tools:-$work/cuda/bin}"
fi
say "ready in $(( $(date +%s) - start )) s; checking"

export PYTHONPATH="$repo/$site"
[[ "$site" = /* ]] && export PYTHONPATH="$site"
export LLAMA_CFFI_TOOLS_DIR="$(cd "$tools" && pwd)"
# the import must be the checked build, not an installed or editable llama_cffi
python -c "import llama_cffi, sys; p = llama_cffi.__file__; sys.exit(0 if p.startswith('$PYTHONPATH') else 'llama_cffi came from ' + p + ', not $PYTHONPATH (an editable install?): run from a virtual environment without one')"
cd benchmarks
python gpu_check.py --backend "$backend" --model "$model" "${quick[@]}"

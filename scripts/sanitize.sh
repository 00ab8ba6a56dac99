#!/usr/bin/env bash
# Build llama.cpp and the llama_cffi extension with AddressSanitizer and
# UndefinedBehaviorSanitizer, then run the test suite (or a subset) under them.
# Not run in CI: the build takes ~25 min on 2 cores, the tests run several
# times slower than usual.
#
#   scripts/sanitize.sh                      # build if needed, run the default subset
#   scripts/sanitize.sh tests/test_lifetime.py -k threads   # any pytest arguments
#   scripts/sanitize.sh --build-only         # just (re)build
#   scripts/sanitize.sh --no-build ...       # use the existing build as it is
#
# Nothing of the normal build is touched:
#   build/asan/           CMake build directory (RelWithDebInfo, -fsanitize=address,undefined)
#   build/asan/pkg/       the package: src/llama_cffi's Python files + the sanitized libraries
#   build/asan/logs/      one sanitizer report per process that had a finding
#   .venv-asan/           a venv whose python imports llama_cffi from build/asan/pkg and
#                         everything else (pytest, numpy, ...) from the normal .venv
#
# How the run is set up, and why:
#   LD_PRELOAD=libasan    CPython is not built with ASan; its runtime must be the
#                         first library in the process for the sanitized .so files.
#     and libstdc++       ASan intercepts __cxa_throw, and finds the real one only
#                         if libstdc++ is loaded when ASan starts; Python loads it
#                         later (with our extension), and then every C++ exception
#                         llama.cpp throws, even one it catches itself, aborts
#                         with "CHECK failed ... real___cxa_throw".
#   detect_leaks=0        CPython keeps objects alive at exit by design: a leak
#                         report would be all noise. (ASAN_OPTIONS overrides.)
#   PYTHONMALLOC=malloc   Python-owned buffers (ffi.new, numpy arrays) come from
#                         malloc, so ASan also sees C reading or writing past them
#                         or after they were freed.
#   log_path              reports go to build/asan/logs/ (tests run subprocesses,
#                         and pytest hides a passing test's stderr); a summary of
#                         every distinct finding is printed at the end.
#   UBSan keeps going after a report (one run shows all); ASan stops the
#   process at its first error (the test that ran it fails).
#
# Environment: JOBS (default 2; the build runs under nice -n 19), BASE_VENV
# (default .venv), LLAMA_TEST_LOCK (default /tmp/llama_test.lock: held only
# while the tests run, never while compiling), ASAN_BUILD_DIR, ASAN_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=${ASAN_BUILD_DIR:-$ROOT/build/asan}
VENV=${ASAN_VENV:-$ROOT/.venv-asan}
BASE_VENV=${BASE_VENV:-$ROOT/.venv}
JOBS=${JOBS:-2}
LOCK=${LLAMA_TEST_LOCK:-/tmp/llama_test.lock}
PKG=$BUILD/pkg
LOGS=$BUILD/logs

# The default subset: what exercises our C boundary (handles, batches,
# samplers, Python callbacks, grammars, the engine's threads) without files
# that cannot work or mean nothing under ASan: test_gguf_mutants.py and
# test_bad_input_corpus.py cap their children's address space (RLIMIT_AS),
# which ASan's shadow memory alone exceeds; test_leaks.py measures memory;
# PyTorch (test_embed.py), the BLAS rebuild, mypy and tool builds are slow
# and not ours. Pass test paths to run anything else.
DEFAULT_TESTS=(
    tests/test_lifetime.py tests/test_bad_input.py tests/test_sampling.py
    tests/test_context.py tests/test_model.py tests/test_tokenizers.py
    tests/test_json_schema.py tests/test_llm.py tests/test_engine.py
    -m "not slow and not blas"
    # llama.cpp turns a failed 24 GiB allocation (std::bad_alloc) into an
    # error; ASan's operator new aborts the process instead of throwing
    --deselect "tests/test_lifetime.py::test_misuse_is_an_exception[context too large for memory]"
)

build=auto
case "${1:-}" in
    --build-only) build=only; shift ;;
    --no-build) build=no; shift ;;
esac

say() { printf '\n== %s\n' "$*"; }
die() { printf 'sanitize.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$BASE_VENV/bin/python" ] || die "no base venv at $BASE_VENV (BASE_VENV=...)"
[ -f vendor/llama.cpp/include/llama.h ] || die "vendor/llama.cpp is missing: build normally once first"
BASE_PY=$("$BASE_VENV/bin/python" -c 'import sys; print(sys._base_executable)')
ASAN_RT=$(gcc -print-file-name=libasan.so)
[ -e "$ASAN_RT" ] || die "gcc has no libasan.so (apt-get install libasan8 / gcc)"
STDCXX_RT=$(gcc -print-file-name=libstdc++.so.6)

SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize=vptr"

if [ "$build" != no ]; then
    say "configure $BUILD"
    start=$(date +%s)
    # llama.cpp's own switches (LLAMA_* for libllama, GGML_* for ggml), plus the
    # same flags for everything, which also covers our extension (_llama).
    # vptr is off: it needs RTTI across the shared libraries and only reports
    # noise here.
    cmake -S . -B "$BUILD" -G Ninja \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DPython_EXECUTABLE="$BASE_VENV/bin/python" \
        -DLLAMA_SANITIZE_ADDRESS=ON -DLLAMA_SANITIZE_UNDEFINED=ON \
        -DGGML_SANITIZE_ADDRESS=ON -DGGML_SANITIZE_UNDEFINED=ON \
        -DCMAKE_C_FLAGS="$SAN_FLAGS" -DCMAKE_CXX_FLAGS="$SAN_FLAGS" \
        -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
        -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
        -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
        -DLLAMA_CFFI_BUILD_TOOLS=OFF >"$BUILD.configure.log" 2>&1 \
        || { tail -40 "$BUILD.configure.log"; die "configure failed"; }
    say "build (nice -n 19, -j$JOBS)"
    nice -n 19 cmake --build "$BUILD" -j "$JOBS"
    say "install the sanitized libraries in $PKG"
    cmake --install "$BUILD" --component python --prefix "$PKG" >/dev/null
    echo "built in $(( $(date +%s) - start )) s"
fi
compgen -G "$PKG/llama_cffi/_llama*.so" >/dev/null || die "no sanitized build in $PKG: run without --no-build"
# The Python files of the checkout as they are now, next to the sanitized
# libraries (never the normal build's .so files from src/).
find "$PKG/llama_cffi" -type f ! -name '*.so' -delete
(cd src && find llama_cffi -name '__pycache__' -prune -o -type f ! -name '*.so' ! -name '*.so.*' \
    -print0 | xargs -0 cp --parents -t "$PKG")
[ "$build" = only ] && exit 0

if [ ! -x "$VENV/bin/python" ]; then
    say "create $VENV"
    "$BASE_PY" -m venv --without-pip "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
BASE_SITE=$("$BASE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# .pth files are read in name order: the sanitized package comes before the
# base venv's site-packages (which may hold a normal llama_cffi install).
echo "$PKG" >"$SITE/00-llama-cffi-asan.pth"
echo "import site; site.addsitedir('$BASE_SITE')" >"$SITE/zz-base-venv.pth"

export LD_PRELOAD="$ASAN_RT $STDCXX_RT${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:log_path=$LOGS/asan:handle_abort=1:print_summary=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:log_path=$LOGS/ubsan}"
export PYTHONMALLOC=malloc
unset PYTHONPATH  # never the normal build in src/

say "check that the sanitized build is the one imported"
"$VENV/bin/python" - "$PKG" <<'EOF'
import sys
import llama_cffi
import llama_cffi._llama as ext
pkg = sys.argv[1]
so = ext.__file__
assert so.startswith(pkg), f"imported {so}, not the sanitized build in {pkg}"
maps = open("/proc/self/maps").read()
assert "libasan" in maps, "the ASan runtime is not loaded"
print("llama_cffi from", llama_cffi.__file__)
print("extension", so)
EOF

rm -rf "$LOGS"
mkdir -p "$LOGS"
if [ $# -eq 0 ]; then
    set -- "${DEFAULT_TESTS[@]}"
fi
# One test file per hold of the lock (other people's runs get their turn in
# between); the other arguments go to every file.
files=()
opts=()
takes_value=" -m -k -p -o -W -c --deselect --ignore --tb --maxfail --durations --rootdir "
value_next=0
for a in "$@"; do
    if [ $value_next = 1 ]; then opts+=("$a"); value_next=0
    elif [[ $a == -* ]]; then
        opts+=("$a")
        [[ $takes_value == *" $a "* ]] && value_next=1
    elif [ -e "${a%%::*}" ]; then files+=("$a")
    else opts+=("$a")
    fi
done
[ ${#files[@]} -gt 0 ] || files=(tests)
rc=0
start=$(date +%s)
for f in "${files[@]}"; do
    say "pytest $f ${opts[*]} (waiting for $LOCK)"
    t0=$(date +%s)
    set +e
    flock "$LOCK" "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$f" "${opts[@]}"
    frc=$?
    set -e
    echo "$f: exit status $frc in $(( $(date +%s) - t0 )) s"
    [ $frc -eq 5 ] && frc=0  # nothing selected in this file
    [ $frc -gt $rc ] && rc=$frc
done
echo "tests: exit status $rc, $(( $(date +%s) - start )) s in all (lock waits included)"

say "sanitizer findings"
shopt -s nullglob
reports=("$LOGS"/*)
if [ ${#reports[@]} -eq 0 ]; then
    echo "none"
else
    echo "${#reports[@]} report file(s) in $LOGS; distinct findings (first frame in our code or llama.cpp):"
    "$BASE_VENV/bin/python" - "${reports[@]}" <<'EOF'
import re
import sys
from collections import Counter

seen: Counter[str] = Counter()
example: dict[str, str] = {}
for path in sys.argv[1:]:
    text = open(path, errors="replace").read()
    # UBSan: "file:line:col: runtime error: message"; ASan: "ERROR: AddressSanitizer: kind"
    for m in re.finditer(r"^(\S+:\d+:\d+): runtime error: (.*)$", text, re.M):
        key = f"UBSan {m.group(1)}: {m.group(2)}"
        seen[key] += 1
        example.setdefault(key, path)
    for m in re.finditer(r"(?:ERROR: AddressSanitizer: (\S+)|AddressSanitizer: (CHECK failed)).*?\n"
                         r"((?:.*\n)*?)(?:\s+#\d+ .*\n)*?((?:\s+#\d+ .*\n)+)", text):
        frames = [f for f in m.group(4).splitlines()
                  if "/vendor/llama.cpp/" in f or "/src/llama_cffi/" in f or "_llama.c" in f]
        where = frames[0].strip() if frames else m.group(4).splitlines()[0].strip()
        where = re.sub(r"^#\d+ 0x[0-9a-f]+ in ", "", where)
        where = re.sub(r"\(.*\)(?= \S+$)", "(...)", where)  # C++ argument lists
        key = f"ASan {m.group(1) or m.group(2)} at {where}"
        seen[key] += 1
        example.setdefault(key, path)
for key, n in seen.most_common():
    print(f"{n:5d}x {key}\n       e.g. {example[key]}")
EOF
fi
exit $rc

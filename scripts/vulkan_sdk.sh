#!/usr/bin/env bash
# Vulkan build kit without root: everything llama.cpp's Vulkan backend needs
# to build and run on a Debian-family machine, unpacked into a cache folder.
#
#   eval "$(scripts/vulkan_sdk.sh)"          # fetch/unpack once, export the env
#   CMAKE_ARGS="$LLAMA_CFFI_VULKAN_CMAKE_ARGS" pip install .
#
# What it does (nothing is installed system-wide; no sudo):
#   - `apt-get download` of mesa-vulkan-drivers (lavapipe, Mesa's Vulkan driver
#     that runs on the CPU), libvulkan1 + libvulkan-dev (loader, headers), glslc
#     and spirv-headers, plus the libraries they depend on that the system
#     lacks; each .deb is unpacked with `dpkg -x` into <dir>/root.
#   - If those headers are too old for the pinned llama.cpp (no
#     vk::LayerSettingEXT: Debian 12 ships 1.3.239), libvulkan-dev of the next
#     Debian suite (VULKAN_HEADERS_SUITE, default trixie: 1.4.309) is fetched
#     from the SAME mirror the system's apt sources already name, through a
#     private apt state under <dir>/apt, and unpacked over them.
#   - lavapipe's ICD json is rewritten to point at the unpacked driver.
#   - <dir>/env.sh gets the exports (VK_ICD_FILENAMES / VK_DRIVER_FILES,
#     LD_LIBRARY_PATH, PATH, GGML_VK_VISIBLE_DEVICES, CMAKE_ARGS for the
#     build); they are printed on stdout, progress goes to stderr.
#
# Options: --dir DIR (default $LLAMA_CFFI_VULKAN_DIR, else
# ${LLAMA_CFFI_CACHE:-~/.cache/llama_cffi}/vulkan), --force (refetch).
# A second run with the kit already in place only prints the exports.
# Exit status: 0 with the kit ready; 3 when a package could not be fetched
# (offline, no apt mirror); 1 for anything else. Each failure prints a
# message naming the step; nothing falls back silently.
set -euo pipefail

dir="${LLAMA_CFFI_VULKAN_DIR:-${LLAMA_CFFI_CACHE:-$HOME/.cache/llama_cffi}/vulkan}"
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "vulkan_sdk.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { echo "vulkan_sdk: $*" >&2; }
die() { echo "vulkan_sdk: error: $*" >&2; exit 1; }
die_fetch() { echo "vulkan_sdk: error: $*" >&2; exit 3; }

# Bump when the recipe changes so that an older kit is rebuilt.
recipe=2
if [ "$force" = 0 ] && [ -f "$dir/env.sh" ] && [ "$(cat "$dir/recipe" 2>/dev/null)" = "$recipe" ]; then
    cat "$dir/env.sh"
    exit 0
fi

for tool in apt-get apt-cache dpkg dpkg-query; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: this script needs a Debian-family system (see docs/building.md for other systems)"
done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
root="$dir/root"
debs="$dir/debs"
rm -rf "$root" "$debs" "$dir/env.sh" "$dir/recipe"
mkdir -p "$root" "$debs"

multiarch="$(gcc -print-multiarch 2>/dev/null || true)"
[ -n "$multiarch" ] || multiarch="$(dpkg --print-architecture)-linux-gnu"
libdir="$root/usr/lib/$multiarch"

wanted=(mesa-vulkan-drivers libvulkan1 libvulkan-dev glslc spirv-headers)

# 1. The packages and their dependencies that the system does not have.
say "resolving ${wanted[*]}"
mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${wanted[@]}" 2>/dev/null \
    | grep -v '^ ' | grep -v '^<' | sort -u)
[ "${#closure[@]}" -gt 0 ] || die "apt-cache knows none of ${wanted[*]} (run apt-get update?)"
fetch=()
for pkg in "${closure[@]}"; do
    case " ${wanted[*]} " in *" $pkg "*) fetch+=("$pkg"); continue ;; esac
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        fetch+=("$pkg")
    fi
done
say "fetching ${fetch[*]}"
( cd "$debs" && apt-get download "${fetch[@]}" ) >&2 2>&1 \
    || die_fetch "apt-get download failed (no network or no apt mirror?): ${fetch[*]}"
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$root"
done

# 2. Newer headers where llama.cpp needs them.
if ! grep -rqs 'struct LayerSettingEXT' "$root/usr/include/vulkan/"; then
    suite="${VULKAN_HEADERS_SUITE:-trixie}"
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    # The mirror: the URI of the system's own apt source for its release.
    uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk -v c="$codename" '
            /^URIs:/ {u=$2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == c) found=u}
            /^$/ {u=""} END {print found}' "$f")"
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk -v c="$codename" '$1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break
                if ($(i + 1) == c) {print $i; exit}}')"
    fi
    [ -n "$uri" ] || die "the Vulkan headers in ${fetch[*]} lack vk::LayerSettingEXT and no Debian mirror was found in /etc/apt/sources* to fetch libvulkan-dev from $suite"
    say "headers too old for llama.cpp: libvulkan-dev from $suite at $uri"
    apt_dir="$dir/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/parts"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    signed=""
    [ -f "$keyring" ] && signed="[signed-by=$keyring] "
    echo "deb ${signed}$uri $suite main" > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "Acquire::Languages=none")
    apt-get "${apt_opts[@]}" update >&2 || die_fetch "apt-get update of $suite from $uri failed"
    mkdir -p "$debs/headers"
    ( cd "$debs/headers" && apt-get "${apt_opts[@]}" download "libvulkan-dev/$suite" ) >&2 \
        || die_fetch "apt-get download libvulkan-dev/$suite failed"
    # Only the headers: the loader stays the one of this system's release.
    mkdir -p "$dir/headers"
    dpkg -x "$debs"/headers/libvulkan-dev_*.deb "$dir/headers"
    rm -rf "$root/usr/include/vulkan" "$root/usr/include/vk_video"
    cp -r "$dir/headers/usr/include/vulkan" "$dir/headers/usr/include/vk_video" "$root/usr/include/"
    rm -rf "$dir/headers"
    grep -rqs 'struct LayerSettingEXT' "$root/usr/include/vulkan/" \
        || die "libvulkan-dev from $suite still lacks vk::LayerSettingEXT"
fi

# 3. lavapipe's ICD file, pointed at the unpacked driver.
icd_src="$(ls "$root"/usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -1)"
[ -n "$icd_src" ] && [ -f "$libdir/libvulkan_lvp.so" ] || die "lavapipe (libvulkan_lvp.so, lvp_icd json) missing from mesa-vulkan-drivers"
icd="$dir/lvp_icd.json"
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$libdir/libvulkan_lvp.so\"#" "$icd_src" > "$icd"
grep -q "$libdir/libvulkan_lvp.so" "$icd" || die "could not rewrite the library path in $icd_src"
[ -x "$root/usr/bin/glslc" ] || die "glslc missing from the glslc package"

cmake_args="-DGGML_VULKAN=ON -DVulkan_INCLUDE_DIR=$root/usr/include -DVulkan_LIBRARY=$libdir/libvulkan.so"
cmake_args+=" -DVulkan_GLSLC_EXECUTABLE=$root/usr/bin/glslc -DSPIRV-Headers_DIR=$root/usr/share/cmake/SPIRV-Headers"

cat > "$dir/env.sh" <<EOF
# Written by scripts/vulkan_sdk.sh: the unpacked Vulkan kit in $dir
export LLAMA_CFFI_VULKAN_DIR="$dir"
export VK_ICD_FILENAMES="$icd"
export VK_DRIVER_FILES="$icd"
export LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$root/usr/bin:\$PATH"
# ggml-vulkan skips CPU-type devices (lavapipe) unless they are listed here;
# "0,0" gives two devices (Vulkan0, Vulkan1) on the same lavapipe.
export GGML_VK_VISIBLE_DEVICES="\${GGML_VK_VISIBLE_DEVICES:-0}"
export LLAMA_CFFI_VULKAN_CMAKE_ARGS="$cmake_args"
# build: CMAKE_ARGS="\$LLAMA_CFFI_VULKAN_CMAKE_ARGS" pip install .
EOF
echo "$recipe" > "$dir/recipe"
rm -rf "$debs"
say "kit ready in $dir ($(du -sh "$dir" | cut -f1)); exports:"
cat "$dir/env.sh"

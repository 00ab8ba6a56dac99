# Backend plugin builds (-DLLAMA_CFFI_PLUGIN=cuda|vulkan): only one GPU
# backend of llama.cpp, as a loadable module (GGML_BACKEND_DL=ON), installed
# alone into the plugin's Python package (llama_cffi_<backend>/). The core
# wheel built with the portable profile loads it at run time (see
# plugins/README.md and docs/building.md, "GPU backends as plugins").
#
# Included twice from CMakeLists.txt: before llama.cpp is added (the options a
# plugin build needs) and, with LLAMA_CFFI_PLUGIN_STAGE=install, after it (the
# target's RPATH and its install rule). A plugin build builds only the
# backend's target (pyproject: build.targets), installs only its module, and
# does not build the cffi extension.

string(TOLOWER "${LLAMA_CFFI_PLUGIN}" _plugin)
string(TOUPPER "${LLAMA_CFFI_PLUGIN}" _PLUGIN)
set(_plugin_target "ggml-${_plugin}")
set(_plugin_package "llama_cffi_${_plugin}")

if(NOT LLAMA_CFFI_PLUGIN_STAGE STREQUAL "install")
    if(NOT _plugin MATCHES "^(cuda|vulkan)$")
        message(FATAL_ERROR
            "llama_cffi: LLAMA_CFFI_PLUGIN=${LLAMA_CFFI_PLUGIN} is not a plugin this project "
            "builds (cuda or vulkan)")
    endif()
    # The module must be loadable next to the core's libggml-base.so: a
    # backend built as a module, its backend switched on, nothing else.
    set(GGML_BACKEND_DL ON CACHE BOOL "llama_cffi plugin: backends as modules" FORCE)
    set(GGML_${_PLUGIN} ON CACHE BOOL "llama_cffi plugin backend" FORCE)
    # a plugin runs on other machines than the build's; it needs no RPC
    if(NOT DEFINED GGML_NATIVE)
        set(GGML_NATIVE OFF CACHE BOOL "llama_cffi plugin default")
    endif()
    if(NOT DEFINED GGML_RPC)
        set(GGML_RPC OFF CACHE BOOL "llama_cffi plugin default")
    endif()
    set(LLAMA_CFFI_MTMD OFF CACHE BOOL "" FORCE)
    set(LLAMA_CFFI_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
    if(_plugin STREQUAL "cuda" AND NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
        # Without an explicit list, llama.cpp asks for "native", which nvcc
        # on a machine without a GPU silently turns into sm_75.
        message(FATAL_ERROR
            "llama_cffi: the CUDA plugin needs -DCMAKE_CUDA_ARCHITECTURES=<list> (e.g. 90-real; "
            "scripts/build_cuda.sh sets it). Without it a build machine without a GPU "
            "silently compiles for sm_75 only.")
    endif()
    return()
endif()

if(NOT TARGET ${_plugin_target})
    message(FATAL_ERROR "llama_cffi: plugin build: llama.cpp created no ${_plugin_target} target")
endif()
# libggml-base.so comes from the core wheel (site-packages/llama_cffi); the
# CUDA runtime and cuBLAS from NVIDIA's runtime wheels (site-packages/nvidia/
# cu13/lib for CUDA 13); libcuda.so.1 is the NVIDIA driver's.
set(_rpath "$ORIGIN/../llama_cffi")
if(_plugin STREQUAL "cuda")
    set(LLAMA_CFFI_CUDA_WHEEL_LIBDIR "nvidia/cu13/lib" CACHE STRING
        "Where NVIDIA's runtime wheels put libcudart/libcublas, relative to site-packages")
    string(APPEND _rpath ":$ORIGIN/../${LLAMA_CFFI_CUDA_WHEEL_LIBDIR}")
endif()
set_target_properties(${_plugin_target} PROPERTIES
    INSTALL_RPATH "${_rpath}"
    # the libraries it links come from other wheels: no build-tree paths
    INSTALL_RPATH_USE_LINK_PATH OFF)
install(TARGETS ${_plugin_target}
    LIBRARY DESTINATION ${_plugin_package} COMPONENT python
    RUNTIME DESTINATION ${_plugin_package} COMPONENT python)
message(STATUS "llama_cffi: plugin build: ${_plugin_target} into ${_plugin_package}/ (RPATH ${_rpath})")

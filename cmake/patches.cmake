# patches/: llama_cffi's changes to llama.cpp's own code, one file per change,
# each with a note naming the upstream change it mirrors (patches/README.md).
#
# The vendored tree (vendor/llama.cpp) gets them when cmake/fetch_llama_cpp.py
# extracts it; its stamp records the patch set, so adding, removing or
# editing a patch re-extracts and re-patches at the next configure (this file
# makes every patch a configure dependency). A user's -DLLAMA_CPP_DIR tree is
# patched only with -DLLAMA_CFFI_PATCH_SOURCE=ON, and then as a copy in the
# build directory (llama_cffi_patched_copy), never in place.

set(LLAMA_CFFI_PATCHES_DIR "${CMAKE_CURRENT_SOURCE_DIR}/patches")
file(GLOB LLAMA_CFFI_PATCHES CONFIGURE_DEPENDS "${LLAMA_CFFI_PATCHES_DIR}/*.patch")
list(SORT LLAMA_CFFI_PATCHES)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${LLAMA_CFFI_PATCHES})
set(LLAMA_CFFI_PATCH_NAMES "")
foreach(_p IN LISTS LLAMA_CFFI_PATCHES)
    get_filename_component(_name "${_p}" NAME)
    list(APPEND LLAMA_CFFI_PATCH_NAMES "${_name}")
endforeach()

# Copy the llama.cpp tree ``source`` to ``dest`` and apply patches/ there. A
# patch that does not apply stops the configure with its name.
function(llama_cffi_patched_copy source dest)
    message(STATUS "llama_cffi: patching a copy of ${source} in ${dest}: ${LLAMA_CFFI_PATCH_NAMES}")
    execute_process(
        COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/fetch_llama_cpp.py"
                --copy-from "${source}" --dest "${dest}" --patches "${LLAMA_CFFI_PATCHES_DIR}"
        RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
        message(FATAL_ERROR
            "llama_cffi: -DLLAMA_CFFI_PATCH_SOURCE=ON but patches/ could not be applied to a copy "
            "of ${source} (the patch is named above). Use a llama.cpp that the patches fit "
            "(the pinned commit), or build without -DLLAMA_CFFI_PATCH_SOURCE.")
    endif()
    # the user's tree is a configure dependency of the copy only through this
    # configure: a later edit there needs a re-configure to reach the copy
endfunction()

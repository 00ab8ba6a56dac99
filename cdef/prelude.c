/* C prelude of the llama_cffi extension: the real headers the declarations
 * are checked against, and the build facts that CMake compiles in. */
#include <stdbool.h>
#include <stdint.h>
#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#ifdef LLAMA_CFFI_HAVE_RPC
#include "ggml-rpc.h"
#endif
#include "llama.h"
#ifdef LLAMA_CFFI_HAVE_MTMD
#include "mtmd.h"
#include "mtmd-helper.h"
#endif

#ifndef LLAMA_CFFI_VERSION
#error "LLAMA_CFFI_VERSION must be defined by the build"
#endif
#ifndef LLAMA_CFFI_LLAMA_COMMIT
#error "LLAMA_CFFI_LLAMA_COMMIT must be defined by the build"
#endif

static const char * llama_cffi_build_version(void) { return LLAMA_CFFI_VERSION; }
static const char * llama_cffi_build_llama_commit(void) { return LLAMA_CFFI_LLAMA_COMMIT; }
static const char * llama_cffi_build_backends(void) { return LLAMA_CFFI_BACKENDS; }
static const char * llama_cffi_build_options(void) { return LLAMA_CFFI_OPTIONS; }
#ifndef LLAMA_CFFI_PATCHES
#define LLAMA_CFFI_PATCHES ""
#endif
/* patches/*.patch applied to the llama.cpp source, ';'-separated */
static const char * llama_cffi_build_patches(void) { return LLAMA_CFFI_PATCHES; }

#ifdef GGML_BACKEND_DL
/* Backends are loadable modules (the portable profile): the extension links
 * none of them, so the few backend-specific functions the declarations name
 * are reached through ggml's registry once the module is loaded
 * (llama_cffi._bindings.loader loads them before anything else runs). */
static ggml_backend_reg_t llama_cffi_dl_cpu_reg(void) {
    return ggml_backend_reg_by_name("CPU");
}
#define ggml_backend_cpu_reg llama_cffi_dl_cpu_reg
#ifdef LLAMA_CFFI_HAVE_RPC
static void * llama_cffi_dl_rpc_proc(const char * name) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    return reg == NULL ? NULL : ggml_backend_reg_get_proc_address(reg, name);
}
static ggml_backend_reg_t llama_cffi_dl_rpc_reg(void) {
    return ggml_backend_reg_by_name("RPC");
}
static ggml_backend_reg_t llama_cffi_dl_rpc_add_server(const char * endpoint) {
    typedef ggml_backend_reg_t (*fn_t)(const char *);
    fn_t fn = (fn_t) llama_cffi_dl_rpc_proc("ggml_backend_rpc_add_server");
    return fn == NULL ? NULL : fn(endpoint);
}
static void llama_cffi_dl_rpc_start_server(const char * endpoint, const char * cache_dir,
                                           size_t n_threads, size_t n_devices,
                                           ggml_backend_dev_t * devices) {
    typedef void (*fn_t)(const char *, const char *, size_t, size_t, ggml_backend_dev_t *);
    fn_t fn = (fn_t) llama_cffi_dl_rpc_proc("ggml_backend_rpc_start_server");
    if (fn != NULL) {
        fn(endpoint, cache_dir, n_threads, n_devices, devices);
    }
}
static void llama_cffi_dl_rpc_get_device_memory(const char * endpoint, uint32_t device,
                                                size_t * mem_free, size_t * mem_total) {
    /* not among the RPC module's exported procedures: unknown */
    (void) endpoint; (void) device;
    *mem_free = 0;
    *mem_total = 0;
}
#define ggml_backend_rpc_reg llama_cffi_dl_rpc_reg
#define ggml_backend_rpc_add_server llama_cffi_dl_rpc_add_server
#define ggml_backend_rpc_start_server llama_cffi_dl_rpc_start_server
#define ggml_backend_rpc_get_device_memory llama_cffi_dl_rpc_get_device_memory
#endif
#endif

/* Installed at interpreter exit so that late C log lines never call Python. */
static void llama_cffi_log_discard(enum ggml_log_level level, const char * text, void * user_data) {
    (void) level; (void) text; (void) user_data;
}

#include "run.h"

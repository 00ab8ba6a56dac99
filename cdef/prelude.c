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

/* Installed at interpreter exit so that late C log lines never call Python. */
static void llama_cffi_log_discard(enum ggml_log_level level, const char * text, void * user_data) {
    (void) level; (void) text; (void) user_data;
}

#include "run.h"

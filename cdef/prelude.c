/* C prelude of the llama_cffi extension: the real headers the declarations
 * are checked against, and the build facts that CMake compiles in. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
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

/* -- the engine's greedy step ------------------------------------------------------ */

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define LLAMA_CFFI_SSE2 1
#endif

/* The token llama.cpp's greedy sampler picks from x[0..n): the first index of
 * the largest value, where NaN never compares greater (so a NaN at index 0
 * keeps index 0, as in llama.cpp). */
static int32_t llama_cffi_argmax(const float * x, int32_t n) {
    if (n <= 0 || isnan(x[0])) {
        return 0;
    }
    int32_t i = 0;
    float m = -INFINITY;
#ifdef LLAMA_CFFI_SSE2
    __m128 a0 = _mm_set1_ps(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 16 <= n; i += 16) {  /* max(x, acc) keeps acc when x is NaN */
        a0 = _mm_max_ps(_mm_loadu_ps(x + i), a0);
        a1 = _mm_max_ps(_mm_loadu_ps(x + i + 4), a1);
        a2 = _mm_max_ps(_mm_loadu_ps(x + i + 8), a2);
        a3 = _mm_max_ps(_mm_loadu_ps(x + i + 12), a3);
    }
    float lanes[4];
    _mm_storeu_ps(lanes, _mm_max_ps(_mm_max_ps(a0, a1), _mm_max_ps(a2, a3)));
    for (int k = 0; k < 4; k++) {
        m = lanes[k] > m ? lanes[k] : m;
    }
#else
    float acc[16];
    for (int k = 0; k < 16; k++) {
        acc[k] = -INFINITY;
    }
    for (; i + 16 <= n; i += 16) {
        for (int k = 0; k < 16; k++) {
            acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
        }
    }
    for (int k = 0; k < 16; k++) {
        m = acc[k] > m ? acc[k] : m;
    }
#endif
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    i = 0;
#ifdef LLAMA_CFFI_SSE2
    const __m128 mm = _mm_set1_ps(m);
    for (; i + 4 <= n; i += 4) {
        const int mask = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), mm));
        if (mask) {
            for (int b = 0; b < 4; b++) {
                if (mask & (1 << b)) {
                    return i + b;
                }
            }
        }
    }
#endif
    for (; i < n; i++) {
        if (x[i] == m) {
            return i;
        }
    }
    return 0;
}

/* The greedy choice for several outputs of the last decode in one call: for
 * output rows[r], the arg-max after adding the row's logit biases (llama.cpp's
 * logit-bias -> greedy chain), then llama_sampler_accept(chains[r], token).
 * A bias that can matter is applied to a copy in scratch (n_vocab floats), so
 * llama.cpp's logits are not changed. Returns n, or r when row r has no logits,
 * or -1 - r when a bias id of row r is outside the vocabulary. */
static int llama_cffi_argmax_rows(struct llama_context * ctx, int n, const int32_t * rows,
        struct llama_sampler * const * chains, const int32_t * const * bias_ids,
        const float * const * bias_values, const int32_t * n_bias, int32_t n_vocab,
        float * scratch, int32_t * out) {
    for (int r = 0; r < n; r++) {
        const float * x = llama_get_logits_ith(ctx, rows[r]);
        if (x == NULL) {
            return r;
        }
        int32_t best = llama_cffi_argmax(x, n_vocab);
        if (n_bias[r] > 0) {
            /* a bias that only lowers tokens cannot change an arg-max it does not
             * touch; any other (raising, NaN, or on the arg-max) is applied */
            int matters = 0;
            for (int32_t k = 0; k < n_bias[r]; k++) {
                const int32_t id = bias_ids[r][k];
                if (id < 0 || id >= n_vocab) {
                    return -1 - r;
                }
                matters |= !(bias_values[r][k] <= 0.0f) || id == best;  /* NaN matters */
            }
            if (matters) {
                if (scratch == NULL) {
                    return -1 - r;
                }
                memcpy(scratch, x, (size_t) n_vocab * sizeof(float));
                for (int32_t k = 0; k < n_bias[r]; k++) {
                    scratch[bias_ids[r][k]] += bias_values[r][k];
                }
                best = llama_cffi_argmax(scratch, n_vocab);
            }
        }
        out[r] = best;
        llama_sampler_accept(chains[r], best);
    }
    return n;
}

/* The engine's generation run: several decode-and-sample steps of the
 * generating sequences in one C call, so the interpreter runs once per run
 * instead of once per token (llama_cffi.objects.run explains when the engine
 * uses it and what Python does with its tokens).
 *
 * Each step decodes the next token of every slot in one batch, samples each
 * slot's output (the arg-max of the logits, with a logit bias, or the slot's
 * llama.cpp sampler chain), and ends the run at the first slot that has to
 * go back to Python: an end-of-generation token, its last allowed token, a
 * possible stop string, or a full sequence. The run also ends after
 * max_steps, when *interrupt is set (a request arrived or was cancelled) or
 * when the time budget is spent. A decode error ends it with llama_decode's
 * code; the step that failed has changed nothing in the slots.
 *
 * A slot may also ask for the log-probabilities of its chosen tokens (the
 * log-softmax of the row and its n_probs best, found by partial selection),
 * and a streamed slot publishes each token as soon as it is chosen: the
 * count n_pub is stored (with release order) after the token and its
 * log-probabilities are written, and one byte goes to notify_fd after the
 * step, so a thread of the caller hands the token on while the next decode
 * runs.
 *
 * A slot with an llguidance matcher (llg.h) is constrained by its grammar:
 * a greedy slot keeps its arg-max when the matcher takes it (checked without
 * computing the mask) and otherwise takes the best token the mask allows; any
 * other chain runs over the allowed tokens only (their logits, in id order),
 * as the per-step path does; the matcher then consumes the token. When
 * llguidance reports an error, or allows no token, the slot ends with why 5
 * and err saying why (its token of that step is not chosen).
 *
 * The run holds no Python objects and calls no Python. */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <unistd.h>
#endif

#include "llg.h"

#define LLAMA_CFFI_RUN_TAIL 512
#define LLAMA_CFFI_RUN_MAX_STOP 128
#define LLAMA_CFFI_RUN_MAX_PROBS 32

/* a store another thread may read while the run goes on: everything the run
 * wrote before it is visible to a reader that sees the new value */
#if defined(__GNUC__) || defined(__clang__)
#define LLAMA_CFFI_PUBLISH(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define LLAMA_CFFI_PUBLISHED(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#else
#define LLAMA_CFFI_PUBLISH(p, v) (*(volatile int32_t *) (p) = (v))
#define LLAMA_CFFI_PUBLISHED(p) (*(const volatile int32_t *) (p))
#endif

typedef struct llama_cffi_run_slot {
    /* set by Python before the run */
    int32_t seq_id;
    int32_t n_past;         /* tokens in the sequence's KV: the next one's position */
    int32_t n_limit;        /* tokens the sequence may hold (the slot's context) */
    int32_t remaining;      /* tokens it may still generate; < 0: no limit */
    int32_t ignore_eos;     /* an end-of-generation token does not end it */
    llama_token next;       /* sampled, not yet decoded */
    struct llama_sampler * chain;
    int32_t argmax;         /* 1: the chain picks the arg-max; pick it here, then accept */
    const int32_t * bias_ids;  /* the chain's logit bias, for the arg-max */
    const float * bias_values;
    int32_t n_bias;
    const char * stops;     /* the stop strings' bytes, one after another */
    const int32_t * stop_lens;
    int32_t n_stops;
    int32_t n_tail;         /* the last bytes of the text so far, for stops across tokens */
    char tail[LLAMA_CFFI_RUN_TAIL];
    /* written by the run */
    llama_token * out;      /* room for max_steps tokens */
    int32_t n_out;
    int32_t why;            /* 0, or why the run ended here: 1 end of generation,
                               2 last allowed token, 3 maybe a stop string, 4 sequence full,
                               5 the grammar failed (err) */
    /* log-probabilities of the chosen tokens, set by Python: n_probs < 0 none,
     * else the chosen token's and the n_probs best (at most LLAMA_CFFI_RUN_MAX_PROBS) */
    int32_t n_probs;
    double * lp_out;        /* room for max_steps * (1 + n_probs): chosen, then the best */
    int32_t * lp_ids;       /* room for max_steps * n_probs: the best ids, best first */
    /* streaming, set by Python: 1 publishes each token as soon as it is chosen */
    int32_t stream;
    int32_t n_pub;          /* tokens of out (and lp_out) published: another thread reads
                               it while the run goes on (LLAMA_CFFI_PUBLISH) */
    /* constrained output, set by Python: the request's llguidance matcher or NULL */
    llama_cffi_llg_matcher * llg;
    const char * err;       /* why == 5: llguidance's error, or ours (written by the run) */
} llama_cffi_run_slot;

typedef struct llama_cffi_run_result {
    int32_t status;         /* llama_decode's code when a decode failed, else 0 */
    int32_t steps;          /* decodes done (tokens added to each slot) */
    int64_t t_decode_us;    /* time inside llama_decode */
    int64_t t_sample_us;    /* time choosing the tokens (llama.cpp's "sampling time") */
    int32_t cpu;            /* the CPU the run's thread was on at its last step (Linux;
                             * -1 elsewhere): the stream pump keeps off it, any thread
                             * reads it during the run */
} llama_cffi_run_result;

#ifdef __linux__
extern int sched_getcpu(void);  /* glibc and musl (sched.h declares it only with _GNU_SOURCE) */
#define LLAMA_CFFI_CURRENT_CPU() sched_getcpu()
#else
#define LLAMA_CFFI_CURRENT_CPU() (-1)
#endif

/* The CPU of the run's thread at its last step (any thread; -1: unknown). */
static int32_t llama_cffi_run_cpu(const llama_cffi_run_result * res) {
    return LLAMA_CFFI_PUBLISHED(&res->cpu);
}

/* Tokens slot i of a run in progress has published (any thread): what they
 * are and their log-probabilities may be read once this returned. */
static int32_t llama_cffi_run_published(const llama_cffi_run_slot * slots, int32_t i) {
    return LLAMA_CFFI_PUBLISHED(&slots[i].n_pub);
}

/* llama.cpp's greedy rule: the first index of the largest logit, where NaN
 * never wins and a NaN at index 0 keeps index 0 (greedy compares x[i] >
 * x[selected] starting from 0).
 *
 * A row is cut into chunks; each chunk gives the first index of its largest
 * value that is not NaN (-1: only NaN), and the row's answer is the first
 * chunk answer with the largest value. With OpenMP the chunks of all the
 * step's rows are shared among the context's threads: right after a decode
 * the logits (1 MiB a row for a 262k vocabulary) come from memory, and one
 * core alone cannot read them at the speed two can. */
#define LLAMA_CFFI_ARGMAX_CHUNK 32768

static int32_t llama_cffi_chunk_scalar(const float * x, int32_t n) {
    int32_t best = -1;
    for (int32_t i = 0; i < n; i++) {
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) {
            best = i;
        }
    }
    return best;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LLAMA_CFFI_HAVE_AVX2_ARGMAX 1
__attribute__((target("avx2")))
static int32_t llama_cffi_chunk_avx2(const float * x, int32_t n) {
    /* two passes over a chunk that stays in the core's cache: the largest
     * value (max_ps keeps the accumulator when the loaded value is NaN, so NaN
     * never enters; four accumulators hide its latency), then the first
     * index holding it (none when every value is NaN) */
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
        m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
        m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
    }
    m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    float lanes[8];
    _mm256_storeu_ps(lanes, m0);
    float top = lanes[0];
    for (int k = 1; k < 8; k++) {
        top = lanes[k] > top ? lanes[k] : top;
    }
    for (int32_t j = i; j < n; j++) {
        top = x[j] > top ? x[j] : top;
    }
    const __m256 t = _mm256_set1_ps(top);
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), t, _CMP_EQ_OQ));
        if (mask) {
            return j + __builtin_ctz((unsigned) mask);
        }
    }
    for (; j < n; j++) {
        if (x[j] == top) {
            return j;
        }
    }
    return -1;  /* only NaN */
}
#endif

static int32_t llama_cffi_chunk(const float * x, int32_t n) {
#ifdef LLAMA_CFFI_HAVE_AVX2_ARGMAX
    if (n >= 64 && __builtin_cpu_supports("avx2")) {
        return llama_cffi_chunk_avx2(x, n);
    }
#endif
    return llama_cffi_chunk_scalar(x, n);
}

/* out[r]: the greedy choice of rows[r] (n_vocab floats each); n_threads > 1
 * shares the chunks among that many OpenMP threads. At most 64 chunks are
 * looked at in one go (rows are taken in groups), so nothing is allocated. */
static void llama_cffi_argmax_rows(const float * const * rows, int32_t n_rows, int32_t n_vocab,
                                   int32_t n_threads, int32_t * out) {
    if (n_vocab <= 0) {
        for (int32_t r = 0; r < n_rows; r++) {
            out[r] = 0;
        }
        return;
    }
    int32_t chunk = LLAMA_CFFI_ARGMAX_CHUNK;
    if ((n_vocab + chunk - 1) / chunk > 64) {
        chunk = (n_vocab + 63) / 64;
    }
    const int32_t per_row = (n_vocab + chunk - 1) / chunk;
    const int32_t group = 64 / per_row;
    int32_t best[64];
    for (int32_t r0 = 0; r0 < n_rows; r0 += group) {
        const int32_t n = n_rows - r0 < group ? n_rows - r0 : group;
        const int32_t units = n * per_row;
#ifdef _OPENMP
        #pragma omp parallel for num_threads(n_threads) schedule(static) \
            if (n_threads > 1 && units > 1)
#endif
        for (int32_t u = 0; u < units; u++) {
            const int32_t start = (u % per_row) * chunk;
            const int32_t len = n_vocab - start < chunk ? n_vocab - start : chunk;
            const int32_t k = llama_cffi_chunk(rows[r0 + u / per_row] + start, len);
            best[u] = k < 0 ? -1 : start + k;
        }
        for (int32_t r = 0; r < n; r++) {
            const float * x = rows[r0 + r];
            int32_t sel = -1;
            for (int32_t c = 0; c < per_row; c++) {
                const int32_t k = best[r * per_row + c];
                if (k >= 0 && (sel < 0 || x[k] > x[sel])) {
                    sel = k;
                }
            }
            out[r0 + r] = (sel < 0 || isnan(x[0])) ? 0 : sel;
        }
    }
    (void) n_threads;
}

static int32_t llama_cffi_argmax(const float * x, int32_t n) {
    int32_t out = 0;
    llama_cffi_argmax_rows(&x, 1, n, 1, &out);
    return out;
}

/* The arg-max ``tok`` after the slot's logit bias: computed again on a copy
 * only when the bias can change the choice (it raises a token, or lowers
 * ``tok``). */
static int32_t llama_cffi_argmax_biased(const float * x, int32_t n, const llama_cffi_run_slot * s,
                                        int32_t tok, float * scratch) {
    if (s->n_bias == 0) {
        return tok;
    }
    int32_t matters = 0;
    for (int32_t k = 0; k < s->n_bias && !matters; k++) {
        matters = s->bias_values[k] > 0.0f || s->bias_ids[k] == tok;
    }
    if (!matters) {
        return tok;
    }
    memcpy(scratch, x, (size_t) n * sizeof(float));
    for (int32_t k = 0; k < s->n_bias; k++) {
        scratch[s->bias_ids[k]] += s->bias_values[k];
    }
    return llama_cffi_argmax(scratch, n);
}

/* Put logit i (value v) among the n_top best in ids[0..*k) (sorted, best
 * first; an equal logit stays behind the ones of lower ids). */
static void llama_cffi_top_insert(const float * x, int32_t i, int32_t n_top, int32_t * ids,
                                  int32_t * k) {
    const float v = x[i];
    if (isnan(v) || (*k == n_top && !(v > x[ids[*k - 1]]))) {
        return;
    }
    int32_t at = *k < n_top ? (*k)++ : *k - 1;  /* the last place, then move up */
    while (at > 0 && v > x[ids[at - 1]]) {
        ids[at] = ids[at - 1];
        at--;
    }
    ids[at] = i;
}

#ifdef LLAMA_CFFI_HAVE_AVX2_ARGMAX
/* e^x for x <= 0 (8 lanes), to about 2e-7 relative: x = k ln2 + r with
 * |r| <= ln2 / 2, e^r by its Taylor series to r^7 / 7!, times 2^k built in
 * the exponent bits; x below -87 gives e^-87 (the sum it goes into is >= 1). */
__attribute__((target("avx2,fma")))
static __m256 llama_cffi_exp_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);  /* ln2, high part */
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.4286068202862268e-06f), r);      /* and the rest */
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k),
                                                         _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* The AVX2 pass of llama_cffi_logprobs: the row's max, then sum(exp(x - max))
 * added up in double, and the best n_top (only lanes above the current last
 * one are looked at). 0 when the row holds NaN (the scalar pass decides). */
__attribute__((target("avx2,fma")))
static int32_t llama_cffi_lse_avx2(const float * x, int32_t n, int32_t n_top, int32_t * ids,
                                   int32_t * k, double * lse) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    __m256 nan = _mm256_setzero_ps();
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(v, m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) {
        return 0;
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float top = lanes[0];
    for (int j = 1; j < 8; j++) {
        top = lanes[j] > top ? lanes[j] : top;
    }
    for (int32_t j = i; j < n; j++) {
        if (isnan(x[j])) {
            return 0;
        }
        top = x[j] > top ? x[j] : top;
    }
    const __m256 mv = _mm256_set1_ps(top);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = llama_cffi_exp_avx2(_mm256_sub_ps(v, mv));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        if (n_top > 0) {
            const float t = *k < n_top ? -INFINITY : x[ids[*k - 1]];
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(t), _CMP_GT_OQ));
            if (*k < n_top) {
                mask = 0xff;
            }
            while (mask) {
                llama_cffi_top_insert(x, i + __builtin_ctz((unsigned) mask), n_top, ids, k);
                mask &= mask - 1;
            }
        }
    }
    double acc[4];
    _mm256_storeu_pd(acc, _mm256_add_pd(s0, s1));
    double sum = acc[0] + acc[1] + acc[2] + acc[3];
    for (int32_t j = i; j < n; j++) {
        sum += exp((double) x[j] - top);
        llama_cffi_top_insert(x, j, n_top, ids, k);
    }
    *lse = (double) top + log(sum);
    return 1;
}
#endif

/* The log-softmax of row x at token tok and at the n_top largest logits
 * (found by partial selection: a sorted list of n_top, no sort of the row),
 * as the per-step path computes it: x - (max + log(sum(exp(x - max)))), in
 * double (with AVX2, each exp is a float one to about 2e-7 relative, the
 * sum in double). lp[0] is tok's, lp[1 + k] that of ids[k]; the best come
 * first, the lower id first among equal logits; NaN logits are never among
 * the best (and make every value NaN). */
static void llama_cffi_logprobs(const float * x, int32_t n_vocab, int32_t tok, int32_t n_top,
                                double * lp, int32_t * ids) {
    double lse = 0.0;
    int32_t k = 0;
    int32_t done = 0;
#ifdef LLAMA_CFFI_HAVE_AVX2_ARGMAX
    if (n_vocab >= 64 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        done = llama_cffi_lse_avx2(x, n_vocab, n_top, ids, &k, &lse);
    }
#endif
    if (!done) {
        double m = -INFINITY;
        for (int32_t i = 0; i < n_vocab; i++) {
            if (x[i] > m) {
                m = x[i];
            }
        }
        double sum = 0.0;
        for (int32_t i = 0; i < n_vocab; i++) {
            sum += exp((double) x[i] - m);
        }
        lse = m + log(sum);
        k = 0;
        for (int32_t i = 0; i < n_vocab && n_top > 0; i++) {
            llama_cffi_top_insert(x, i, n_top, ids, &k);
        }
    }
    lp[0] = (tok >= 0 && tok < n_vocab) ? (double) x[tok] - lse : NAN;
    for (int32_t j = 0; j < n_top; j++) {
        if (j >= k) {
            ids[j] = -1;  /* fewer tokens than asked for */
            lp[1 + j] = NAN;
        } else {
            lp[1 + j] = (double) x[ids[j]] - lse;
        }
    }
}

static int32_t llama_cffi_ctz(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(x);
#else
    int32_t n = 0;
    while (!(x & 1u)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* The slot's mask of allowed tokens into mask (bytes long); 0, or -1 with err set. */
static int32_t llama_cffi_run_llg_mask(llama_cffi_run_slot * s, uint32_t * mask, size_t bytes) {
    if (llama_cffi_llg_mask(s->llg, mask, bytes) != 0) {
        const char * e = llama_cffi_llg_error(s->llg);
        s->err = e != NULL ? e : "llguidance could not compute the token mask";
        return -1;
    }
    return 0;
}

static const char * const llama_cffi_llg_none =
    "the grammar allows no token here: the output so far cannot be continued";

/* A greedy slot under its grammar: the arg-max ``tok`` when the matcher takes
 * it, else the first of the largest logits among the allowed tokens (the
 * greedy sampler over them); -1 on an error. */
static llama_token llama_cffi_run_llg_greedy(llama_cffi_run_slot * s, const float * row,
                                             int32_t n_vocab, llama_token tok, uint32_t * mask,
                                             size_t bytes) {
    const uint32_t t = (uint32_t) tok;
    if (llama_cffi_llg_validate(s->llg, &t, 1) == 1) {
        return tok;
    }
    if (llama_cffi_run_llg_mask(s, mask, bytes) != 0) {
        return -1;
    }
    int32_t best = -1;
    const int32_t words = (int32_t) (bytes / 4);
    for (int32_t w = 0; w < words; w++) {
        uint32_t bits = mask[w];
        while (bits) {
            const int32_t id = w * 32 + llama_cffi_ctz(bits);
            bits &= bits - 1;
            if (id < n_vocab && (best < 0 || row[id] > row[best])) {
                best = id;
            }
        }
    }
    if (best < 0) {
        s->err = llama_cffi_llg_none;
    }
    return best;
}

/* Any other chain under its grammar: the chain runs over the allowed tokens
 * (in id order) and its choice is accepted by the chain; -1 on an error. */
static llama_token llama_cffi_run_llg_sample(llama_cffi_run_slot * s, const float * row,
                                             int32_t n_vocab, uint32_t * mask, size_t bytes,
                                             llama_token_data * cands) {
    if (llama_cffi_run_llg_mask(s, mask, bytes) != 0) {
        return -1;
    }
    size_t n = 0;
    const int32_t words = (int32_t) (bytes / 4);
    for (int32_t w = 0; w < words; w++) {
        uint32_t bits = mask[w];
        while (bits) {
            const int32_t id = w * 32 + llama_cffi_ctz(bits);
            bits &= bits - 1;
            if (id < n_vocab) {
                cands[n].id = id;
                cands[n].logit = row[id];
                cands[n].p = 0.0f;
                n++;
            }
        }
    }
    if (n == 0) {
        s->err = llama_cffi_llg_none;
        return -1;
    }
    llama_token_data_array cur = { cands, n, -1, false };
    llama_sampler_apply(s->chain, &cur);
    if (cur.selected < 0 || (size_t) cur.selected >= cur.size) {
        s->err = "the sampler chain selected no token among those the grammar allows";
        return -1;
    }
    const llama_token tok = cur.data[cur.selected].id;
    llama_sampler_accept(s->chain, tok);
    return tok;
}

/* Append a token's text to the slot's tail; 1 when a stop string may have
 * been reached (Python decides on the decoded text). */
static int32_t llama_cffi_run_stop(const struct llama_vocab * vocab, llama_cffi_run_slot * s,
                                   llama_token tok) {
    char piece[256];
    int32_t n = llama_token_to_piece(vocab, tok, piece, (int32_t) sizeof piece, 0, false);
    if (n < 0 || s->n_tail + n > LLAMA_CFFI_RUN_TAIL) {
        return 1;  /* a piece too long to follow here: let Python look */
    }
    memcpy(s->tail + s->n_tail, piece, (size_t) n);
    s->n_tail += n;
    int32_t keep = 0;
    const char * stop = s->stops;
    for (int32_t k = 0; k < s->n_stops; k++) {
        int32_t len = s->stop_lens[k];
        for (int32_t at = 0; at + len <= s->n_tail; at++) {
            if (memcmp(s->tail + at, stop, (size_t) len) == 0) {
                return 1;
            }
        }
        if (len - 1 > keep) {
            keep = len - 1;
        }
        stop += len;
    }
    if (s->n_tail > keep) {  /* keep only what a stop string could still start with */
        memmove(s->tail, s->tail + s->n_tail - keep, (size_t) keep);
        s->n_tail = keep;
    }
    return 0;
}

static void llama_cffi_run(struct llama_context * ctx, struct llama_batch * batch,
                           llama_cffi_run_slot * slots, int32_t n_slots, int32_t max_steps,
                           const volatile int32_t * interrupt, int64_t budget_us,
                           int32_t notify_fd, llama_cffi_run_result * res) {
    const struct llama_vocab * vocab = llama_model_get_vocab(llama_get_model(ctx));
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    const int64_t t_start = ggml_time_us();
    const int32_t n_threads = llama_n_threads(ctx);
    float * scratch = NULL;
    const float ** rows = (const float **) malloc((size_t) n_slots * sizeof(float *));
    int32_t * picked = (int32_t *) malloc((size_t) n_slots * sizeof(int32_t));
    const float ** lp_rows = (const float **) malloc((size_t) n_slots * sizeof(float *));
    llama_token * chosen = (llama_token *) malloc((size_t) n_slots * sizeof(llama_token));
    res->status = 0;
    res->steps = 0;
    res->t_decode_us = 0;
    res->t_sample_us = 0;
    LLAMA_CFFI_PUBLISH(&res->cpu, (int32_t) LLAMA_CFFI_CURRENT_CPU());
    int32_t streams = 0;
    size_t mask_bytes = 0;
    int32_t n_cands = 0;
    for (int32_t i = 0; i < n_slots; i++) {
        slots[i].n_out = 0;
        slots[i].why = 0;
        slots[i].err = NULL;
        if (slots[i].llg != NULL) {
            const size_t b = llama_cffi_llg.loaded ? llama_cffi_llg_mask_bytes(slots[i].llg) : 0;
            if (b < (size_t) (n_vocab + 31) / 32 * 4) {
                res->status = -4;  /* not a matcher for this vocabulary: Python's step */
            }
            mask_bytes = b > mask_bytes ? b : mask_bytes;
            n_cands |= !slots[i].argmax;
        }
        LLAMA_CFFI_PUBLISH(&slots[i].n_pub, 0);
        streams |= slots[i].stream;
        if (slots[i].n_probs > LLAMA_CFFI_RUN_MAX_PROBS
                || (slots[i].n_probs >= 0 && (slots[i].lp_out == NULL
                                              || (slots[i].n_probs > 0 && slots[i].lp_ids == NULL)))) {
            res->status = -4;  /* no room for the log-probabilities: Python takes the step */
        }
        if (slots[i].n_bias > 0 && scratch == NULL) {
            scratch = (float *) malloc((size_t) n_vocab * sizeof(float));
            if (scratch == NULL) {
                res->status = -3;
            }
        }
    }
    uint32_t * mask = mask_bytes ? (uint32_t *) malloc(mask_bytes) : NULL;
    llama_token_data * cands = n_cands ? (llama_token_data *) malloc(
        (size_t) n_vocab * sizeof(llama_token_data)) : NULL;
    if (rows == NULL || picked == NULL || lp_rows == NULL || chosen == NULL
            || (mask_bytes && mask == NULL) || (n_cands && cands == NULL)) {
        res->status = -3;
    }
    if (res->status != 0) {  /* out of memory or bad slots: Python takes the step */
        free(mask);
        free(cands);
        free(scratch);
        free(rows);
        free(picked);
        free(lp_rows);
        free(chosen);
        return;
    }
    for (int32_t step = 0; step < max_steps; step++) {
        if (step > 0 && (*interrupt || ggml_time_us() - t_start >= budget_us)) {
            break;
        }
        int32_t full = 0;
        for (int32_t i = 0; i < n_slots; i++) {
            if (slots[i].n_past + 1 > slots[i].n_limit) {
                slots[i].why = 4;
                full = 1;
            }
        }
        if (full) {
            break;
        }
        for (int32_t i = 0; i < n_slots; i++) {
            batch->token[i] = slots[i].next;
            batch->pos[i] = slots[i].n_past;
            batch->n_seq_id[i] = 1;
            batch->seq_id[i][0] = slots[i].seq_id;
            batch->logits[i] = 1;
        }
        batch->n_tokens = n_slots;
        const int64_t t0 = ggml_time_us();
        const int32_t rc = llama_decode(ctx, *batch);
        res->t_decode_us += ggml_time_us() - t0;
        if (rc != 0) {
            res->status = rc;
            break;
        }
        res->steps++;
        const int64_t t1 = ggml_time_us();
        int32_t n_rows = 0;
        for (int32_t i = 0; i < n_slots; i++) {
            if (slots[i].argmax) {
                rows[n_rows++] = llama_get_logits_ith(ctx, i);
            }
        }
        llama_cffi_argmax_rows(rows, n_rows, n_vocab, n_threads, picked);
        int32_t n_lp = 0;
        for (int32_t i = 0, r = 0; i < n_slots; i++) {
            llama_cffi_run_slot * s = &slots[i];
            llama_token tok;
            const float * row = NULL;
            if (s->argmax) {
                row = rows[r];
                tok = llama_cffi_argmax_biased(rows[r], n_vocab, s, picked[r], scratch);
                r++;
                if (s->llg != NULL) {
                    tok = llama_cffi_run_llg_greedy(s, row, n_vocab, tok, mask, mask_bytes);
                }
                if (tok >= 0) {
                    llama_sampler_accept(s->chain, tok);
                }
            } else if (s->llg != NULL) {
                row = llama_get_logits_ith(ctx, i);
                tok = llama_cffi_run_llg_sample(s, row, n_vocab, mask, mask_bytes, cands);
            } else {
                if (s->n_probs >= 0) {  /* the row before the chain changes anything */
                    row = llama_get_logits_ith(ctx, i);
                }
                tok = llama_sampler_sample(s->chain, ctx, i);
            }
            /* (a stopped matcher takes no more tokens, not even the end of
             * generation it allows: the request ends on that token anyway) */
            if (tok >= 0 && s->llg != NULL
                    && !(llama_vocab_is_eog(vocab, tok) && llama_cffi_llg_stopped(s->llg))
                    && llama_cffi_llg_consume(s->llg, (uint32_t) tok) != 0) {
                const char * e = llama_cffi_llg_error(s->llg);
                s->err = e != NULL ? e : "llguidance refused the chosen token";
                tok = -1;
            }
            chosen[i] = tok;
            lp_rows[i] = row;
            n_lp += s->n_probs >= 0 && tok >= 0;
        }
        /* the log-probabilities of the slots that ask for them, shared among
         * the context's threads (each slot writes only its own memory) */
#ifdef _OPENMP
        #pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) \
            if (n_threads > 1 && n_lp > 1)
#endif
        for (int32_t i = 0; i < n_slots; i++) {
            llama_cffi_run_slot * s = &slots[i];
            if (s->n_probs < 0 || chosen[i] < 0) {
                continue;
            }
            const int32_t w = 1 + s->n_probs;
            double * lp = s->lp_out + (size_t) s->n_out * (size_t) w;
            int32_t * ids = s->lp_ids + (size_t) s->n_out * (size_t) s->n_probs;
            if (lp_rows[i] != NULL) {
                llama_cffi_logprobs(lp_rows[i], n_vocab, chosen[i], s->n_probs, lp, ids);
            } else {  /* no logits (sampled in the graph): nothing to give */
                for (int32_t k = 0; k < w; k++) {
                    lp[k] = NAN;
                }
                for (int32_t k = 0; k < s->n_probs; k++) {
                    ids[k] = -1;
                }
            }
        }
        int32_t stop_run = 0;
        for (int32_t i = 0; i < n_slots; i++) {
            llama_cffi_run_slot * s = &slots[i];
            const llama_token tok = chosen[i];
            s->n_past++;
            if (tok < 0) {  /* the grammar failed: no token for this step */
                s->why = 5;
            } else {
                s->out[s->n_out++] = tok;
                if (!s->ignore_eos && llama_vocab_is_eog(vocab, tok)) {
                    s->why = 1;
                } else if (s->remaining > 0 && --s->remaining == 0) {
                    s->why = 2;
                } else if (s->n_stops > 0 && llama_cffi_run_stop(vocab, s, tok)) {
                    s->why = 3;
                } else {
                    s->next = tok;
                }
            }
            stop_run |= s->why != 0;
            if (s->stream) {
                LLAMA_CFFI_PUBLISH(&s->n_pub, s->n_out);
            }
        }
        res->t_sample_us += ggml_time_us() - t1;
#ifndef _WIN32
        if (streams && notify_fd >= 0) {  /* wake the reader of the published tokens */
            LLAMA_CFFI_PUBLISH(&res->cpu, (int32_t) LLAMA_CFFI_CURRENT_CPU());
            const char one = 1;
            ssize_t ignored = write(notify_fd, &one, 1);  /* full pipe: it is awake anyway */
            (void) ignored;
        }
#else
        (void) notify_fd;
#endif
        if (stop_run) {
            break;
        }
    }
    free(mask);
    free(cands);
    free(scratch);
    free(rows);
    free(picked);
    free(lp_rows);
    free(chosen);
}

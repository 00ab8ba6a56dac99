/* llguidance's token masks for the generation run (run.h) and for Python.
 *
 * llguidance's C API lives in the shared library of its Python package
 * (llguidance/_lib.abi3.so exports the llg_* functions). It is found at run
 * time: Python passes the library's path to llama_cffi_llg_load, which
 * resolves the functions with dlopen/dlsym (LoadLibrary/GetProcAddress on
 * Windows). Nothing here needs llguidance to build: the declarations below
 * are ours, written from the layout llguidance's llguidance.h documents
 * (the v2 tokenizer init, which carries its own size, and the constraint
 * init, which llg_constraint_init_set_defaults fills).
 *
 * A tokenizer (llama_cffi_llg_tok) is made from the model's own tokens (their
 * bytes, the end-of-generation ids) and tokenizes with llama_tokenize on the
 * model's vocabulary, which Python detaches before the model is freed. It is
 * counted: each matcher made from it holds it, so it is freed after the last
 * of them. A matcher (llama_cffi_llg_matcher) is one grammar's state. */
#ifndef _WIN32
#include <dlfcn.h>
#else
#include <windows.h>
#endif
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define LLAMA_CFFI_REF_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#define LLAMA_CFFI_LOAD_PTR(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LLAMA_CFFI_STORE_PTR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#else  /* MSVC */
#define LLAMA_CFFI_REF_ADD(p, v) (InterlockedExchangeAdd((volatile LONG *) (p), (v)) + (v))
#define LLAMA_CFFI_LOAD_PTR(p) (*(void * const volatile *) (p))
#define LLAMA_CFFI_STORE_PTR(p, v) (*(void * volatile *) (p) = (void *) (v))
#endif

typedef struct llama_cffi_llg_limits_c {  /* llguidance's LlgParserLimits */
    size_t max_items_in_row;
    uint64_t initial_lexer_fuel;
    uint64_t step_lexer_fuel;
    size_t step_max_items;
    size_t max_lexer_states;
    size_t max_grammar_size;
    bool precompute_large_lexemes;
    bool verbose_errors;
} llama_cffi_llg_limits_c;

typedef struct llama_cffi_llg_init_c {  /* llguidance's LlgConstraintInit */
    const void * tokenizer;
    uint32_t log_buffer_level;
    uint32_t log_stderr_level;
    bool ff_tokens_ok;
    bool backtrack_ok;
    llama_cffi_llg_limits_c limits;
} llama_cffi_llg_init_c;

typedef size_t (*llama_cffi_llg_tokenize_fn)(const void * user_data, const uint8_t * bytes,
                                             size_t n_bytes, uint32_t * out, size_t n_out);

typedef struct llama_cffi_llg_tok_init_c {  /* llguidance's LlgTokenizerInitV2 */
    size_t struct_size;
    uint32_t vocab_size;
    uint32_t tok_eos;
    const uint32_t * token_lens;
    const uint8_t * token_bytes;
    const char * tokenizer_json;
    bool tokenize_assumes_string;
    llama_cffi_llg_tokenize_fn tokenize_fn;
    bool use_approximate_greedy_tokenize_fn;
    const void * tokenize_user_data;
    const char * const * slices;
    const uint32_t * tok_eos_extra;
    uint32_t tok_eos_extra_count;
} llama_cffi_llg_tok_init_c;

static struct {
    int loaded;
    void * (*new_tokenizer_v2)(const llama_cffi_llg_tok_init_c *, char *, size_t);
    void (*free_tokenizer)(void *);
    size_t (*decode_tokens)(const void *, const uint32_t *, size_t, char *, size_t, uint32_t);
    void (*init_set_defaults)(void *, const void *);
    void * (*new_matcher)(const void *, const char *, const char *);
    void * (*clone_matcher)(const void *);
    void (*free_matcher)(void *);
    const char * (*get_error)(void *);
    bool (*is_error)(const void *);
    int32_t (*compute_mask_into)(void *, uint32_t *, size_t);
    size_t (*mask_byte_size)(const void *);
    int32_t (*consume_token)(void *, uint32_t);
    int32_t (*validate_tokens)(void *, const uint32_t *, size_t);
    bool (*is_accepting)(void *);
    bool (*is_stopped)(const void *);
    int32_t (*reset)(void *);
} llama_cffi_llg;

/* Resolve llguidance's functions from the library at ``path`` (once; later
 * calls return at once). 0, or -1 with the reason in err. */
static int32_t llama_cffi_llg_load(const char * path, char * err, size_t err_len) {
    if (llama_cffi_llg.loaded) {
        return 0;
    }
#ifndef _WIN32
    void * h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, err_len, "%s", dlerror());
        return -1;
    }
#define LLAMA_CFFI_LLG_SYM(field, name) \
    *(void **) (&llama_cffi_llg.field) = dlsym(h, name); \
    if (llama_cffi_llg.field == NULL) { snprintf(err, err_len, "%s has no %s", path, name); return -1; }
#else
    HMODULE h = LoadLibraryA(path);
    if (h == NULL) {
        snprintf(err, err_len, "cannot load %s (error %lu)", path, (unsigned long) GetLastError());
        return -1;
    }
#define LLAMA_CFFI_LLG_SYM(field, name) \
    *(FARPROC *) (&llama_cffi_llg.field) = GetProcAddress(h, name); \
    if (llama_cffi_llg.field == NULL) { snprintf(err, err_len, "%s has no %s", path, name); return -1; }
#endif
    LLAMA_CFFI_LLG_SYM(new_tokenizer_v2, "llg_new_tokenizer_v2")
    LLAMA_CFFI_LLG_SYM(free_tokenizer, "llg_free_tokenizer")
    LLAMA_CFFI_LLG_SYM(decode_tokens, "llg_decode_tokens")
    LLAMA_CFFI_LLG_SYM(init_set_defaults, "llg_constraint_init_set_defaults")
    LLAMA_CFFI_LLG_SYM(new_matcher, "llg_new_matcher")
    LLAMA_CFFI_LLG_SYM(clone_matcher, "llg_clone_matcher")
    LLAMA_CFFI_LLG_SYM(free_matcher, "llg_free_matcher")
    LLAMA_CFFI_LLG_SYM(get_error, "llg_matcher_get_error")
    LLAMA_CFFI_LLG_SYM(is_error, "llg_matcher_is_error")
    LLAMA_CFFI_LLG_SYM(compute_mask_into, "llg_matcher_compute_mask_into")
    LLAMA_CFFI_LLG_SYM(mask_byte_size, "llg_matcher_get_mask_byte_size")
    LLAMA_CFFI_LLG_SYM(consume_token, "llg_matcher_consume_token")
    LLAMA_CFFI_LLG_SYM(validate_tokens, "llg_matcher_validate_tokens")
    LLAMA_CFFI_LLG_SYM(is_accepting, "llg_matcher_is_accepting")
    LLAMA_CFFI_LLG_SYM(is_stopped, "llg_matcher_is_stopped")
    LLAMA_CFFI_LLG_SYM(reset, "llg_matcher_reset")
#undef LLAMA_CFFI_LLG_SYM
    llama_cffi_llg.loaded = 1;
    return 0;
}

typedef struct llama_cffi_llg_tok {
    void * tok;                          /* llguidance's LlgTokenizer */
    const struct llama_vocab * vocab;    /* NULL once detached (the model is closing) */
    int32_t refs;
} llama_cffi_llg_tok;

typedef struct llama_cffi_llg_matcher {
    void * m;                            /* llguidance's LlgMatcher */
    llama_cffi_llg_tok * tok;
} llama_cffi_llg_matcher;

static void llama_cffi_llg_tok_release(llama_cffi_llg_tok * t) {
    if (t != NULL && LLAMA_CFFI_REF_ADD(&t->refs, -1) == 0) {
        llama_cffi_llg.free_tokenizer(t->tok);
        free(t);
    }
}

/* llguidance's tokenize callback: llama_tokenize on the model's vocabulary,
 * no BOS, special tokens as text; nothing once the model is gone. */
static size_t llama_cffi_llg_tokenize(const void * user_data, const uint8_t * bytes,
                                      size_t n_bytes, uint32_t * out, size_t n_out) {
    const llama_cffi_llg_tok * t = (const llama_cffi_llg_tok *) user_data;
    const struct llama_vocab * vocab = (const struct llama_vocab *) LLAMA_CFFI_LOAD_PTR(&t->vocab);
    if (vocab == NULL || n_bytes > INT32_MAX) {
        return 0;
    }
    const int32_t room = n_out > INT32_MAX ? INT32_MAX : (int32_t) n_out;
    int32_t n = llama_tokenize(vocab, (const char *) bytes, (int32_t) n_bytes, (llama_token *) out,
                               room, false, false);
    return n < 0 ? (size_t) -(int64_t) n : (size_t) n;
}

/* A tokenizer for ``vocab``'s model: token i is lens[i] bytes of ``bytes``;
 * eos[0..n_eos) end a generation. NULL with the reason in err. */
static llama_cffi_llg_tok * llama_cffi_llg_tokenizer_new(
        const struct llama_vocab * vocab, uint32_t n_vocab, const uint32_t * eos, uint32_t n_eos,
        const uint32_t * lens, const uint8_t * bytes, char * err, size_t err_len) {
    if (!llama_cffi_llg.loaded || n_eos == 0) {
        snprintf(err, err_len, "%s", n_eos == 0 ? "no end-of-generation token"
                                                : "llguidance is not loaded");
        return NULL;
    }
    llama_cffi_llg_tok * t = (llama_cffi_llg_tok *) calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    t->vocab = vocab;
    t->refs = 1;
    llama_cffi_llg_tok_init_c init;
    memset(&init, 0, sizeof init);
    init.struct_size = sizeof init;
    init.vocab_size = n_vocab;
    init.tok_eos = eos[0];
    init.token_lens = lens;
    init.token_bytes = bytes;
    init.tokenize_assumes_string = true;  /* llama_tokenize reads text */
    init.tokenize_fn = llama_cffi_llg_tokenize;
    init.tokenize_user_data = t;
    init.tok_eos_extra = n_eos > 1 ? eos + 1 : NULL;
    init.tok_eos_extra_count = n_eos - 1;
    t->tok = llama_cffi_llg.new_tokenizer_v2(&init, err, err_len);
    if (t->tok == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

/* The model is closing: tokenize nothing from now on; drop Python's hold. */
static void llama_cffi_llg_tokenizer_close(llama_cffi_llg_tok * t) {
    LLAMA_CFFI_STORE_PTR(&t->vocab, NULL);
    llama_cffi_llg_tok_release(t);
}

/* The bytes of tokens (no special tokens) into out; the bytes there are. */
static size_t llama_cffi_llg_decode(const llama_cffi_llg_tok * t, const uint32_t * toks, size_t n,
                                    char * out, size_t out_len) {
    return llama_cffi_llg.decode_tokens(t->tok, toks, n, out, out_len, 0);
}

/* A matcher of ``data`` (llguidance's constraint_type ``type``: "llguidance",
 * "json", "lark", "regex"). step_max_items / step_lexer_fuel: the parser's
 * limits per mask (0: llguidance's default). Check llama_cffi_llg_error. */
static llama_cffi_llg_matcher * llama_cffi_llg_matcher_new(llama_cffi_llg_tok * t,
                                                           const char * type, const char * data,
                                                           uint64_t step_max_items,
                                                           uint64_t step_lexer_fuel) {
    union { llama_cffi_llg_init_c init; char room[1024]; } u;  /* room for a newer layout */
    memset(&u, 0, sizeof u);
    llama_cffi_llg.init_set_defaults(&u, t->tok);
    u.init.tokenizer = t->tok;
    u.init.log_buffer_level = 0;
    u.init.log_stderr_level = 0;
    if (step_max_items) {
        u.init.limits.step_max_items = (size_t) step_max_items;
    }
    if (step_lexer_fuel) {
        u.init.limits.step_lexer_fuel = step_lexer_fuel;
    }
    llama_cffi_llg_matcher * m = (llama_cffi_llg_matcher *) calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->m = llama_cffi_llg.new_matcher(&u, type, data);
    m->tok = t;
    LLAMA_CFFI_REF_ADD(&t->refs, 1);
    return m;
}

static llama_cffi_llg_matcher * llama_cffi_llg_matcher_clone(const llama_cffi_llg_matcher * src) {
    llama_cffi_llg_matcher * m = (llama_cffi_llg_matcher *) calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->m = llama_cffi_llg.clone_matcher(src->m);
    m->tok = src->tok;
    LLAMA_CFFI_REF_ADD(&m->tok->refs, 1);
    return m;
}

static void llama_cffi_llg_matcher_free(llama_cffi_llg_matcher * m) {
    if (m != NULL) {
        llama_cffi_llg.free_matcher(m->m);
        llama_cffi_llg_tok_release(m->tok);
        free(m);
    }
}

/* The matcher's error message, or NULL. */
static const char * llama_cffi_llg_error(llama_cffi_llg_matcher * m) {
    return llama_cffi_llg.is_error(m->m) ? llama_cffi_llg.get_error(m->m) : NULL;
}

static size_t llama_cffi_llg_mask_bytes(const llama_cffi_llg_matcher * m) {
    return llama_cffi_llg.mask_byte_size(m->m);
}

/* The tokens allowed next, one bit each, into mask (mask_bytes bytes); 0 or -1. */
static int32_t llama_cffi_llg_mask(llama_cffi_llg_matcher * m, uint32_t * mask, size_t bytes) {
    return llama_cffi_llg.compute_mask_into(m->m, mask, bytes);
}

static int32_t llama_cffi_llg_consume(llama_cffi_llg_matcher * m, uint32_t tok) {
    return llama_cffi_llg.consume_token(m->m, tok);
}

/* How many of toks the matcher would take (-1: error). */
static int32_t llama_cffi_llg_validate(llama_cffi_llg_matcher * m, const uint32_t * toks,
                                       size_t n) {
    return llama_cffi_llg.validate_tokens(m->m, toks, n);
}

static int32_t llama_cffi_llg_accepting(llama_cffi_llg_matcher * m) {
    return llama_cffi_llg.is_accepting(m->m) ? 1 : 0;
}

static int32_t llama_cffi_llg_stopped(const llama_cffi_llg_matcher * m) {
    return llama_cffi_llg.is_stopped(m->m) ? 1 : 0;
}

static int32_t llama_cffi_llg_reset(llama_cffi_llg_matcher * m) {
    return llama_cffi_llg.reset(m->m);
}

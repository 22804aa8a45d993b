/* Batched fp32 GEMM whose operands are addressed through offset tables, for the structured layers' CPU path.

   For every batch entry b, row m < M, column n < N:
       C[c_b[b] + c_m[m] + n] (+)= sum_{k < K} A[a_b[b] + a_m[m] + a_k[k]] * B[b_b[b] + b_k[k] + n]
   so any permutation or blocking of A's axes is read in place (A is only ever broadcast, one element at a time),
   while B and C need unit stride along n (they are loaded and stored a vector at a time). This lets a two-core
   structure (BTT, Monarch, Einsum, Tensor-Train) run on token-major activations with no transposing copies.

   Two micro-kernels, chosen once per process by the CPU: AVX-512 (8 rows x 32 columns in 16 registers, column
   tails masked) where the CPU has AVX-512F, else AVX2 + FMA (6 rows x 16 columns in 12 registers); K in chunks
   of KC. Work is split over
   `nthreads` POSIX threads, by rows when there are many (the activations' tokens), else by batch entries
   (weight gradients: one entry per block, K = tokens). Callers must keep C of different batch entries disjoint.
   offset_gemm_chain runs several such GEMMs over the same tokens, tile after tile, so what one writes is still
   in cache when the next reads it. Compiled without -mavx2: the kernels carry target attributes, and
   offset_gemm_supported() tells callers whether this CPU can run them (and picks the kernel). */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime, for fan_out.h */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fan_out.h"

#define MR 6   /* AVX2 tile */
#define NR 16
#define MR512 8  /* AVX-512 tile */
#define NR512 32
#define KC 128

/* One GEMM: its sizes, operands and offset tables (the comment above). */
typedef struct {
    int64_t nb, M, N, K;
    const float *A; const int64_t *a_b, *a_m, *a_k;
    const float *B; const int64_t *b_b, *b_k;
    float *C; const int64_t *c_b, *c_m;
    int64_t accumulate;
} gemm_t;

typedef struct {
    gemm_t g;
    int64_t m0, m1, b0, b1, mc;  /* this thread's rows and batch entries; rows visited per batch entry */
} job_t;

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f")))

AVX2 static inline __m256i tail_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One tile: mr <= 6 rows, nr <= 16 columns (8 per register; `two` registers per row when nr > 8), kc terms.
   Always inlined with constant mr, two and masked (masked: nr < 16), so the guards vanish and the accumulators
   stay in registers; a column tail of 1-8 then costs one FMA per row and term, not two. */
AVX2 static inline __attribute__((always_inline)) void tile(
        int64_t mr, int64_t nr, int two, int masked, int64_t kc, const float *const *arow, const int64_t *a_k,
        const float *B, const int64_t *b_k, float *const *crow, int load_c) {
    __m256i mask0 = tail_mask(nr), mask1 = tail_mask(nr - 8);
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++) {
        const int64_t o = a_k[k];
        const float *b = B + b_k[k];
        __m256 b0, b1 = _mm256_setzero_ps(), a;
        b0 = masked && !two ? _mm256_maskload_ps(b, mask0) : _mm256_loadu_ps(b);
        if (two) b1 = masked ? _mm256_maskload_ps(b + 8, mask1) : _mm256_loadu_ps(b + 8);
#define ROW(r, x0, x1) if (r < mr) { a = _mm256_broadcast_ss(arow[r] + o); \
        x0 = _mm256_fmadd_ps(a, b0, x0); if (two) x1 = _mm256_fmadd_ps(a, b1, x1); }
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31) ROW(4, c40, c41) ROW(5, c50, c51)
#undef ROW
    }
#define STORE(r, x0, x1) if (r < mr) { float *c = crow[r]; \
        if (!masked) { \
            if (load_c) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(c)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(c + 8)); } \
            _mm256_storeu_ps(c, x0); _mm256_storeu_ps(c + 8, x1); \
        } else if (!two) { \
            if (load_c) x0 = _mm256_add_ps(x0, _mm256_maskload_ps(c, mask0)); \
            _mm256_maskstore_ps(c, mask0, x0); \
        } else { \
            if (load_c) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(c)); \
                          x1 = _mm256_add_ps(x1, _mm256_maskload_ps(c + 8, mask1)); } \
            _mm256_storeu_ps(c, x0); _mm256_maskstore_ps(c + 8, mask1, x1); } }
    STORE(0, c00, c01) STORE(1, c10, c11) STORE(2, c20, c21) STORE(3, c30, c31) STORE(4, c40, c41) STORE(5, c50, c51)
#undef STORE
}

/* The tile for mr rows and the nr columns left: the full 6 x 16 kernel, or a column tail of 9-15 or 1-8
   (all three specialised for six rows), or, rarely, a row tail. */
AVX2 static inline void any_tile(int64_t mr, int64_t nr, int64_t kc, const float *const *arow, const int64_t *a_k,
                                 const float *B, const int64_t *b_k, float *const *crow, int load_c) {
    if (mr == MR && nr >= NR) tile(MR, NR, 1, 0, kc, arow, a_k, B, b_k, crow, load_c);
    else if (mr == MR && nr > 8) tile(MR, nr, 1, 1, kc, arow, a_k, B, b_k, crow, load_c);
    else if (mr == MR) tile(MR, nr, 0, 1, kc, arow, a_k, B, b_k, crow, load_c);
    else if (nr > 8) tile(mr, nr < NR ? nr : NR, 1, 1, kc, arow, a_k, B, b_k, crow, load_c);
    else tile(mr, nr, 0, 1, kc, arow, a_k, B, b_k, crow, load_c);
}

/* AVX-512 tile: mr <= 8 rows, nr <= 32 columns (16 per register; `two` registers per row when nr > 16), kc
   terms; columns past nr are masked off (masks cost nothing here), so only mr and two need constants. */
AVX512 static inline __attribute__((always_inline)) void tile512(
        int64_t mr, int64_t nr, int two, int64_t kc, const float *const *arow, const int64_t *a_k,
        const float *B, const int64_t *b_k, float *const *crow, int load_c) {
    const __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < kc; k++) {
        const int64_t o = a_k[k];
        const float *b = B + b_k[k];
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        const __m512 b1 = two ? _mm512_maskz_loadu_ps(m1, b + 16) : _mm512_setzero_ps();
        __m512 a;
#define ROW(r, x0, x1) if (r < mr) { a = _mm512_set1_ps(arow[r][o]); \
        x0 = _mm512_fmadd_ps(a, b0, x0); if (two) x1 = _mm512_fmadd_ps(a, b1, x1); }
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31)
        ROW(4, c40, c41) ROW(5, c50, c51) ROW(6, c60, c61) ROW(7, c70, c71)
#undef ROW
    }
#define STORE(r, x0, x1) if (r < mr) { float *c = crow[r]; \
        if (load_c) x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, c)); \
        _mm512_mask_storeu_ps(c, m0, x0); \
        if (two) { if (load_c) x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, c + 16)); \
                   _mm512_mask_storeu_ps(c + 16, m1, x1); } }
    STORE(0, c00, c01) STORE(1, c10, c11) STORE(2, c20, c21) STORE(3, c30, c31)
    STORE(4, c40, c41) STORE(5, c50, c51) STORE(6, c60, c61) STORE(7, c70, c71)
#undef STORE
}

AVX512 static inline void any_tile512(int64_t mr, int64_t nr, int64_t kc, const float *const *arow,
                                      const int64_t *a_k, const float *B, const int64_t *b_k, float *const *crow,
                                      int load_c) {
    if (mr == MR512 && nr > 16) tile512(MR512, nr, 1, kc, arow, a_k, B, b_k, crow, load_c);
    else if (mr == MR512) tile512(MR512, nr, 0, kc, arow, a_k, B, b_k, crow, load_c);
    else tile512(mr, nr, nr > 16, kc, arow, a_k, B, b_k, crow, load_c);
}

/* One thread's share of a GEMM, for a kernel of mr_max x nr_max tiles: loops K chunk -> a run of mc rows ->
   batch entry -> mr_max-row group -> nr_max columns. */
#define DEFINE_RUN(name, attr, mr_max, nr_max, tile_fn) \
attr static void name(const job_t *j) { \
    const gemm_t *g = &j->g; \
    for (int64_t k0 = 0; k0 < g->K; k0 += KC) { \
        const int64_t kc = g->K - k0 < KC ? g->K - k0 : KC; \
        const int load_c = g->accumulate || k0 > 0; \
        for (int64_t mc = j->m0; mc < j->m1; mc += j->mc) { \
            const int64_t mc_stop = mc + j->mc < j->m1 ? mc + j->mc : j->m1; \
            for (int64_t b = j->b0; b < j->b1; b++) { \
                const float *A = g->A + g->a_b[b], *B = g->B + g->b_b[b]; \
                const float *A_next = b + 1 < j->b1 ? g->A + g->a_b[b + 1] : NULL; \
                float *C = g->C + g->c_b[b]; \
                for (int64_t m = mc; m < mc_stop; m += mr_max) { \
                    const int64_t mr = mc_stop - m < mr_max ? mc_stop - m : mr_max; \
                    const float *arow[mr_max]; \
                    float *crow[mr_max]; \
                    for (int r = 0; r < mr_max; r++) { \
                        const int64_t row = m + (r < mr ? r : 0); \
                        arow[r] = A + g->a_m[row]; \
                        crow[r] = C + g->c_m[row]; \
                        if (A_next && r < mr) { \
                            _mm_prefetch((const char *)(A_next + g->a_m[row] + g->a_k[k0]), _MM_HINT_T0); \
                            _mm_prefetch((const char *)(A_next + g->a_m[row] + g->a_k[k0 + kc - 1]), _MM_HINT_T0); \
                        } \
                    } \
                    for (int64_t n = 0; n < g->N; n += nr_max) { \
                        float *cr[mr_max]; \
                        for (int r = 0; r < mr_max; r++) cr[r] = crow[r] + n; \
                        tile_fn(mr, g->N - n, kc, arow, g->a_k + k0, B + n, g->b_k + k0, cr, load_c); \
                    } \
                } \
            } \
        } \
    } \
}
DEFINE_RUN(run_avx2, AVX2, MR, NR, any_tile)
DEFINE_RUN(run_avx512, AVX512, MR512, NR512, any_tile512)
#undef DEFINE_RUN

/* The kernel this CPU runs and its rows per tile (offset_gemm_supported picks them). */
static int use_avx512 = 0;
static int64_t tile_rows = MR;

static void run(const job_t *j) {
    if (use_avx512) run_avx512(j);
    else run_avx2(j);
}

static void *run_thread(void *arg) {
    run(arg);
    return NULL;
}

/* Whether this CPU runs the kernels (AVX2 and FMA); picks AVX-512 where the CPU has it and SCALING_NATIVE_AVX512 is
   not "0". Called once, when the library is loaded. */
int offset_gemm_supported(void) {
    __builtin_cpu_init();
    const char *env = getenv("SCALING_NATIVE_AVX512");
    use_avx512 = __builtin_cpu_supports("avx512f") && !(env && env[0] == '0' && env[1] == 0);
    tile_rows = use_avx512 ? MR512 : MR;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* 512 when the AVX-512 kernel runs, else 256. */
int offset_gemm_vector_bits(void) {
    return use_avx512 ? 512 : 256;
}

/* Returns 0, or -1 when a thread could not be started (the work is then finished on the calling thread). */
int offset_gemm(int64_t nb, int64_t M, int64_t N, int64_t K,
                const float *A, const int64_t *a_b, const int64_t *a_m, const int64_t *a_k,
                const float *B, const int64_t *b_b, const int64_t *b_k,
                float *C, const int64_t *c_b, const int64_t *c_m, int accumulate, int nthreads) {
    if (nb <= 0 || M <= 0 || N <= 0 || K <= 0) return 0;  /* nothing to add: C is left as it is */
    const job_t base = {{nb, M, N, K, A, a_b, a_m, a_k, B, b_b, b_k, C, c_b, c_m, accumulate}, 0, M, 0, nb, M};
    /* Many rows: threads take runs of rows and visit every batch entry a tile's rows at a time (streams stay few).
       Few rows: threads take whole batch entries and all their rows (a weight gradient's block). */
    const int by_rows = nb < nthreads || M >= 16 * nb;
    const int64_t units = by_rows ? (M + tile_rows - 1) / tile_rows : nb;
    nthreads = fan_out_threads(units, nthreads);
    job_t jobs[FAN_OUT_MAX_THREADS];
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = base;
        const int64_t u0 = units * t / nthreads, u1 = units * (t + 1) / nthreads;
        if (by_rows) {
            jobs[t].m0 = u0 * tile_rows;
            jobs[t].m1 = u1 * tile_rows < M ? u1 * tile_rows : M;
            jobs[t].mc = tile_rows;
        } else {
            jobs[t].b0 = u0;
            jobs[t].b1 = u1;
        }
    }
    return fan_out(run_thread, jobs, sizeof(job_t), nthreads);
}

/* One GEMM of a chain: an offset GEMM over all tokens, one of whose axes counts tokens. */
typedef struct {
    gemm_t g;
    int64_t terms_per_token;  /* 0: the rows are the tokens; else the terms are (token, carried) pairs, this many */
    int64_t private_stride;   /* thread t writes C + t * private_stride (weight gradients, a tile's scratch); 0: shared */
    int64_t a_private_stride; /* thread t reads A + t * a_private_stride (a tile's scratch an earlier GEMM wrote) */
} chain_op_t;

typedef struct {
    const chain_op_t *ops;
    int64_t n_ops, t0, t1, tile, thread;
} chain_job_t;

/* One thread's tokens, tile after tile, every GEMM of the chain on the tile before the next tile: what one GEMM
   writes for a tile (z, dz) is still in cache when the next reads it. Tiles start at multiples of `tile`, so an
   intermediate can live in a per-thread scratch of `tile` rows (private C, then private A) whose row table
   repeats every tile: it never goes to memory. */
static void *run_chain(void *arg) {
    const chain_job_t *c = arg;
    for (int64_t s = c->t0; s < c->t1; s += c->tile) {
        const int64_t e = s + c->tile < c->t1 ? s + c->tile : c->t1;
        for (int64_t i = 0; i < c->n_ops; i++) {
            const chain_op_t *op = &c->ops[i];
            job_t j = {op->g, 0, op->g.M, 0, op->g.nb, op->g.M};
            j.g.C += c->thread * op->private_stride;
            j.g.A += c->thread * op->a_private_stride;
            if (op->terms_per_token == 0) {  /* rows s..e: a tile's rows at a time across every batch entry */
                j.g.M = j.m1 = e - s;
                j.g.a_m += s;
                j.g.c_m += s;
                j.mc = tile_rows;
            } else {  /* terms of tokens s..e, added to the thread's accumulator */
                j.g.K = (e - s) * op->terms_per_token;
                j.g.a_k += s * op->terms_per_token;
                j.g.b_k += s * op->terms_per_token;
                j.g.accumulate = 1;
            }
            if (j.g.M > 0 && j.g.K > 0) run(&j);
        }
    }
    return NULL;
}

/* Runs the GEMMs `ops` over `tokens` tokens in tiles of `tile`, threads taking contiguous runs of tiles.
   Returns 0; -1 when a thread could not be started (its share ran on the calling thread); -2 (nothing run)
   when a GEMM summing over tokens has no private accumulator while several threads would share it. */
int offset_gemm_chain(int64_t n_ops, const chain_op_t *ops, int64_t tokens, int64_t tile, int nthreads) {
    if (tokens <= 0 || n_ops <= 0) return 0;
    if (tile < 1) tile = 1;
    const int64_t units = (tokens + tile - 1) / tile;
    nthreads = fan_out_threads(units, nthreads);
    for (int64_t i = 0; i < n_ops; i++)
        if (ops[i].terms_per_token > 0 && ops[i].private_stride == 0 && nthreads > 1) return -2;
    chain_job_t jobs[FAN_OUT_MAX_THREADS];
    for (int t = 0; t < nthreads; t++) {
        const int64_t u0 = units * t / nthreads, u1 = units * (t + 1) / nthreads;
        jobs[t] = (chain_job_t){ops, n_ops, u0 * tile, u1 * tile < tokens ? u1 * tile : tokens, tile, t};
    }
    return fan_out(run_chain, jobs, sizeof(chain_job_t), nthreads);
}

typedef struct {
    int64_t r0, r1, d;
    const float *a, *b;
    float *out;
} dots_job_t;

AVX2 static void *row_dots_rows(void *arg) {
    const dots_job_t *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const float *a = j->a + r * j->d, *b = j->b + r * j->d;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c + 16 <= j->d; c += 16) {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + c + 8), _mm256_loadu_ps(b + c + 8), acc1);
        }
        float lanes[8], sum = 0.0f;
        _mm256_storeu_ps(lanes, _mm256_add_ps(acc0, acc1));
        for (int i = 0; i < 8; i++) sum += lanes[i];
        for (; c < j->d; c++) sum += a[c] * b[c];
        j->out[r] = sum;
    }
    return NULL;
}

/* out[r] = sum_c a[r, c] b[r, c] for r < n, fp32 rows d apart: one pass over both (a routed expert's gate
   gradient; torch's vecdot writes the products out and sums them again). Returns as fan_out. */
int offset_gemm_row_dots(int64_t n, int64_t d, const float *a, const float *b, float *out, int nthreads) {
    nthreads = fan_out_threads(n, nthreads);
    dots_job_t jobs[FAN_OUT_MAX_THREADS];
    for (int t = 0; t < nthreads; t++) jobs[t] = (dots_job_t){n * t / nthreads, n * (t + 1) / nthreads, d, a, b, out};
    return fan_out(row_dots_rows, jobs, sizeof(dots_job_t), nthreads);
}

typedef struct {
    int64_t t0, t1, k, d;
    const float *rows;
    const int64_t *slots;
    const float *weights;
    float *out;
} combine_job_t;

AVX2 static void *combine_rows(void *arg) {
    const combine_job_t *j = arg;
    for (int64_t t = j->t0; t < j->t1; t++) {
        const int64_t *slot = j->slots + t * j->k;
        float *o = j->out + t * j->d;
        int64_t c = 0;
        for (; c + 8 <= j->d; c += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t i = 0; i < j->k; i++) {
                const __m256 w = _mm256_set1_ps(j->weights ? j->weights[slot[i]] : 1.0f);
                acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(j->rows + slot[i] * j->d + c), acc);
            }
            _mm256_storeu_ps(o + c, acc);
        }
        for (; c < j->d; c++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < j->k; i++) acc += (j->weights ? j->weights[slot[i]] : 1.0f) * j->rows[slot[i] * j->d + c];
            o[c] = acc;
        }
    }
    return NULL;
}

/* out[t] = sum_i weights[s] rows[s] over the k slots s = slots[t, i] of each token t < n (weights 1 when NULL);
   rows (slots, d) and out (n, d) fp32: a mixture's slots added back per token in one pass, each out row written
   once. Returns as fan_out. */
int offset_gemm_combine(int64_t n, int64_t k, int64_t d, const float *rows, const int64_t *slots,
                        const float *weights, float *out, int nthreads) {
    nthreads = fan_out_threads(n, nthreads);
    combine_job_t jobs[FAN_OUT_MAX_THREADS];
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (combine_job_t){n * t / nthreads, n * (t + 1) / nthreads, k, d, rows, slots, weights, out};
    return fan_out(combine_rows, jobs, sizeof(combine_job_t), nthreads);
}

/* A two-core structured layer (BTT, Monarch) in bf16 on AMX tiles, one pass over tiles of 32 tokens per direction.

   The layer (bf16 values, fp32 accumulation, every intermediate rounded to bf16 as autocast rounds a matmul's output):
       z[t, b, p]  = sum_k x[t, b K1 + k] w0[b, p, k]                  core 1: B1 blocks, P1 = R S outputs, K1 inputs
       z2[t, s, c] = z[t, c / R, (c % R) S + s]                        the regroup: block s of core 2 reads (b, r)
       y[t, f(s, q)] = sum_c z2[t, s, c] w1[s, q, c]                   core 2: S blocks, P2 outputs, K2 = B1 R inputs
   with f(s, q) = s P2 + q (BTT) or q S + s (Monarch's interleaved output); features beyond d_in / d_out are zero /
   dropped. The forward reads x and writes y, nothing else. The backward reads x and dy: per tile it recomputes z2
   (core 1 and the regroup, in cache), runs core 2 transposed, the regroup inverted and core 1 transposed for dx,
   and accumulates both weight gradients over the tile's tokens in fp32 (per thread; summed and rounded to bf16 once
   at the end, as one autocast matmul over all tokens rounds). Per step the layer moves x, y, dy, dx and x again.

   Each GEMM runs on tiles: A = 16 token rows x 32 bf16 of one block (x and dy read in place when their blocks need
   no padding, as BTT's at d = 1024: 1.05-1.2x faster fwd+bwd than staging them; x also when its blocks are 16 + 32 j
   wide, read two blocks to a window, as BTT's at d = 512 and 768: forward 1.2-1.3x faster, backward 1.1x; else
   staged in a zero-padded scratch, as every intermediate is), B = the weight of that block packed by the caller in
   VNNI pairs (see amx.py: pack), C = 16 x 16 fp32. Blocks' K are padded to multiples of 32 and N to multiples of
   16, so one tile configuration serves every shape. A weight gradient tile multiplies 16 outputs x 32 tokens (the
   activations' gradient transposed in registers) by 32 tokens x 16 inputs (the inputs, pairs of tokens
   interleaved): 32-token tiles measured 1.15x faster than 16-token ones (fwd+bwd of BTT at d = 1024), the weight
   gradients' accumulators being loaded and stored half as often. Threads take runs of token tiles; each configures
   its own tiles. amx_two_core_supported() requests the AMX state from Linux (arch_prctl) and says whether the CPU
   and kernel allow it. Compiled without -mamx: the functions carry target
   attributes. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fan_out.h"

#define ROWS 32  /* tokens per tile: two 16-row halves in the layer's GEMMs, the K of the weight gradients' */
#define KCHUNK 32
#define NCHUNK 16
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))

typedef struct {
    int64_t n, d_in, d_out;
    int64_t b1, p1, k1;   /* core 1: w0 (b1, p1, k1) */
    int64_t rank, s;      /* p1 = rank s; core 2 has s blocks of k2 = b1 rank inputs */
    int64_t p2;           /* core 2: w1 (s, p2, b1 rank) */
    int64_t interleaved;  /* output feature of (s, q): q s_count + s, else s p2 + q */
} shape_t;

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) tile_config_t;

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

static uint16_t to_bf16_scalar(float f) {  /* round to nearest even, NaN kept NaN (as torch) */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* dst[c] = bf16(src[c]) for c < count (contiguous; round to nearest even, as torch rounds). */
AMX static void convert_row(uint16_t *dst, const float *src, int64_t count) {
    for (int64_t c = 0; c < count; c += 16) {
        const __mmask16 m = count - c >= 16 ? 0xffff : (__mmask16)((1u << (count - c)) - 1);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + c));
        _mm256_mask_storeu_epi16(dst + c, m, (__m256i)h);
    }
}

/* dst[c] = bf16(base[idx[c]]) for c < count: a regroup (or an interleaved store) as gathers. */
AMX static void gather_row(uint16_t *dst, const float *base, const int32_t *idx, int64_t count) {
    for (int64_t c = 0; c < count; c += 16) {
        const __mmask16 m = count - c >= 16 ? 0xffff : (__mmask16)((1u << (count - c)) - 1);
        const __m512i at = _mm512_maskz_loadu_epi32(m, idx + c);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, at, base, 4));
        _mm256_mask_storeu_epi16(dst + c, m, (__m256i)h);
    }
}

/* The 16 x 16 floats in r, transposed in registers (unpack pairs, then 64-bit, then 128-bit lane shuffles). */
AMX static void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

static __mmask16 first(int64_t count) {
    return count >= 16 ? 0xffff : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

/* dst[c ldd + r] = bf16(src[r lds + c]) for r < rows, c < cols and c ldd + r < limit: a regroup (rank 1, or any
   rank whose blocks need no padding) or Monarch's interleaved output, as 16 x 16 register transposes. */
AMX static void transpose_convert(uint16_t *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                                  int64_t cols, int64_t limit) {
    __m512 r[16];
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        for (int64_t c0 = 0; c0 < cols; c0 += 16) {
            const __mmask16 cm = first(cols - c0);
            for (int64_t k = 0; k < 16; k++)
                r[k] = r0 + k < rows ? _mm512_maskz_loadu_ps(cm, src + (r0 + k) * lds + c0) : _mm512_setzero_ps();
            transpose16(r);
            for (int64_t k = 0; k < 16 && c0 + k < cols; k++) {
                const int64_t c = c0 + k, room = limit - c * ldd - r0;
                const __mmask16 m = first(rows - r0 < room ? rows - r0 : room);
                _mm256_mask_storeu_epi16(dst + c * ldd + r0, m, (__m256i)_mm512_cvtneps_pbh(r[k]));
            }
        }
    }
}

/* dst[c] = src[c] for c < count, in 64-byte vectors inlined (the rows are short: a libc memcpy call per row cost
   as much as the copy). */
AMX static inline void copy_bf16(uint16_t *dst, const uint16_t *src, int64_t count) {
    for (int64_t c = 0; c < count; c += 32) {
        const __mmask32 m = count - c >= 32 ? 0xffffffffu : (__mmask32)((1u << (count - c)) - 1);
        _mm512_mask_storeu_epi16(dst + c, m, _mm512_maskz_loadu_epi16(m, src + c));
    }
}

/* dst[c] = src[c] for c < count and 0 for count <= c < width (a block cut by d_in / d_out, or a row past n). */
AMX static inline void copy_block(uint16_t *dst, const uint16_t *src, int64_t count, int64_t width) {
    if (count < 0) count = 0;
    copy_bf16(dst, src, count);
    for (int64_t c = count; c < width; c++) dst[c] = 0;
}

static int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Every tile 16 rows x 64 bytes. The layer's GEMMs (block_gemm): C in 0, 3, 6 and 7, A in 1 and 4, B in 2 and 5;
   the weight gradients: 3 = C (16 x 16 fp32), 4 = A (16 outputs x 32 tokens), 5 = B (16 token pairs x 16
   columns). */
AMX static void configure_tiles(void) {
    tile_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    _tile_loadconfig(&cfg);
}

/* For each of nb blocks: C[32 rows, block b, np columns] = A[32 rows, block b, kp] @ packed B of block b. A: bf16,
   lda elements per row, block b's kp columns from b a_bs rounded down to a multiple of 32 (x_in_pairs: two blocks
   of 16 + 32 j inputs share a window, each B padded on the other's side); C: fp32, ldc per row, blocks c_bs apart.
   The output's 16-column units (block, column chunk) run in pairs on 2 x 2 tiles (two halves of 16 rows x two
   units: four accumulators, two A and two B tiles), so consecutive multiplies do not wait on one register
   (fwd+bwd 1.02-1.05x faster than one unit at a time at d = 512-1024). */
AMX static void block_gemm(const uint16_t *A, int64_t lda, int64_t a_bs, const uint16_t *B, int64_t nb, int64_t kp,
                           int64_t np, float *C, int64_t ldc, int64_t c_bs) {
    const int64_t kc_count = kp / KCHUNK, nc_count = np / NCHUNK, units = nb * nc_count;
    for (int64_t u = 0; u < units; u += 2) {
        const int64_t v = u + 1 < units ? u + 1 : u;  /* an odd last unit runs twice, into the same place */
        const uint16_t *bu = B + u * (kp / 2) * 32, *bv = B + v * (kp / 2) * 32;
        const uint16_t *au = A + (((u / nc_count) * a_bs) & ~(int64_t)(KCHUNK - 1));
        const uint16_t *av = A + (((v / nc_count) * a_bs) & ~(int64_t)(KCHUNK - 1));
        _tile_zero(0);
        _tile_zero(3);
        _tile_zero(6);
        _tile_zero(7);
        for (int64_t kc = 0; kc < kc_count; kc++) {
            _tile_loadd(2, bu + kc * (KCHUNK / 2) * 32, 64);
            _tile_loadd(5, bv + kc * (KCHUNK / 2) * 32, 64);
            _tile_loadd(1, au + kc * KCHUNK, lda * 2);
            _tile_loadd(4, av + kc * KCHUNK, lda * 2);
            _tile_dpbf16ps(0, 1, 2);
            _tile_dpbf16ps(3, 4, 5);
            _tile_loadd(1, au + 16 * lda + kc * KCHUNK, lda * 2);
            _tile_loadd(4, av + 16 * lda + kc * KCHUNK, lda * 2);
            _tile_dpbf16ps(6, 1, 2);
            _tile_dpbf16ps(7, 4, 5);
        }
        float *cu = C + (u / nc_count) * c_bs + (u % nc_count) * NCHUNK;
        float *cv = C + (v / nc_count) * c_bs + (v % nc_count) * NCHUNK;
        _tile_stored(0, cu, ldc * 4);
        _tile_stored(6, cu + 16 * ldc, ldc * 4);
        _tile_stored(3, cv, ldc * 4);
        _tile_stored(7, cv + 16 * ldc, ldc * 4);
    }
}

/* 16 x 16 bf16 transposed exactly (through fp32): dst[c ldd + r] = src[r lds + c]. */
AMX static void transpose_bf16(uint16_t *dst, int64_t ldd, const uint16_t *src, int64_t lds) {
    __m512 r[16];
    for (int k = 0; k < 16; k++)
        r[k] = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + k * lds))), 16));
    transpose16(r);
    for (int k = 0; k < 16; k++)
        _mm256_storeu_si256((__m256i *)(dst + k * ldd),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(r[k]), 16)));
}

/* dst (16 x 16 pairs) = rows 2i and 2i + 1 of src (32 rows x 16 bf16, lds apart) interleaved: a B tile over
   tokens. */
AMX static void pair_rows(uint16_t *dst, const uint16_t *src, int64_t lds) {
    for (int i = 0; i < 16; i++) {
        const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + 2 * i * lds)));
        const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + (2 * i + 1) * lds)));
        _mm512_storeu_si512(dst + i * 32, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

/* acc (nb blocks x po outputs x ki inputs, fp32, both padded to 16s) += g^T a over the tile's 32 tokens, where
   g (32 rows, block b's po gradient columns at g + b g_bs) and a (32 rows, block b's ki columns at a + b a_bs) are
   staged bf16 rows (ldg, lda elements apart). gts (po / 16 tiles of 16 x 32) and pairs (ki / 16 tiles of 16 x 32)
   are scratch: each operand tile of a block is built once. */
AMX static void weight_gradient(float *acc, int64_t nb, int64_t po, int64_t ki, const uint16_t *g, int64_t ldg,
                                int64_t g_bs, const uint16_t *a, int64_t lda, int64_t a_bs, uint16_t *gts,
                                uint16_t *pairs) {
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t oc = 0; oc < po; oc += 16) {
            transpose_bf16(gts + oc * 32, 32, g + b * g_bs + oc, ldg);
            transpose_bf16(gts + oc * 32 + 16, 32, g + 16 * ldg + b * g_bs + oc, ldg);
        }
        for (int64_t ic = 0; ic < ki; ic += 16) pair_rows(pairs + ic * 32, a + b * a_bs + ic, lda);
        for (int64_t oc = 0; oc < po; oc += 16) {
            _tile_loadd(4, gts + oc * 32, 64);
            for (int64_t ic = 0; ic < ki; ic += 16) {
                float *c = acc + (b * po + oc) * ki + ic;
                _tile_loadd(5, pairs + ic * 32, 64);
                _tile_loadd(3, c, ki * 4);
                _tile_dpbf16ps(3, 4, 5);
                _tile_stored(3, c, ki * 4);
            }
        }
    }
}

typedef struct {
    const shape_t *sh;
    int64_t tile0, tile1;
    const uint16_t *x, *dy;         /* token-major; dy NULL in the forward */
    const uint16_t *w0p, *w1p;      /* packed core 1 and core 2 */
    const uint16_t *w1tp, *w0tp;    /* packed core 2 and core 1 transposed (backward) */
    uint16_t *out;                  /* y (forward) or dx (backward), token-major */
    float *dw0, *dw1;               /* this thread's fp32 accumulators (backward) */
    int status;
} job_t;

/* The per-thread scratch: staged rows (bf16) and GEMM results (fp32) of one tile, rows padded by a cache line
   (2^k-byte strides would put a tile's rows in one cache set). */
typedef struct {
    int64_t kp1, np1, kp2, np2, kpo, npm, kpm, npi;  /* padded K / N of core 1, core 2, core 2^T, core 1^T */
    int64_t xr, zr, zfr, yr, gr, dr, dzr, dxr;       /* row strides */
    uint16_t *xs, *zs, *gs, *ds, *gts, *pairs;
    float *zf, *yf, *dzf, *dxf;
    int32_t *mid, *back;
} scratch_t;

static void free_scratch(scratch_t *w) {
    free(w->xs); free(w->zs); free(w->gs); free(w->ds); free(w->gts); free(w->pairs);
    free(w->zf); free(w->yf); free(w->dzf); free(w->dxf);
    free(w->mid); free(w->back);
}

static int alloc_scratch(scratch_t *w, const shape_t *sh) {
    const int64_t b1 = sh->b1, s = sh->s, r = sh->rank, k2 = sh->b1 * sh->rank;
    memset(w, 0, sizeof *w);
    w->kp1 = round_up(sh->k1, KCHUNK); w->np1 = round_up(sh->p1, NCHUNK);
    w->kp2 = round_up(k2, KCHUNK); w->np2 = round_up(sh->p2, NCHUNK);
    w->kpo = round_up(sh->p2, KCHUNK); w->npm = round_up(k2, NCHUNK);
    w->kpm = round_up(sh->p1, KCHUNK); w->npi = round_up(sh->k1, NCHUNK);
    w->xr = b1 * w->kp1 + 32; w->zr = s * w->kp2 + 32; w->zfr = b1 * w->np1 + 16; w->yr = s * w->np2 + 16;
    w->gr = s * w->kpo + 32; w->dr = b1 * w->kpm + 32; w->dzr = s * w->npm + 16; w->dxr = b1 * w->npi + 16;
    w->xs = calloc((size_t)(ROWS * w->xr), 2); w->zs = calloc((size_t)(ROWS * w->zr), 2);
    w->gs = calloc((size_t)(ROWS * w->gr), 2); w->ds = calloc((size_t)(ROWS * w->dr), 2);
    w->zf = malloc((size_t)(ROWS * w->zfr) * 4); w->yf = malloc((size_t)(ROWS * w->yr) * 4);
    w->dzf = malloc((size_t)(ROWS * w->dzr) * 4); w->dxf = malloc((size_t)(ROWS * w->dxr) * 4);
    w->mid = malloc((size_t)k2 * 4); w->back = malloc((size_t)sh->p1 * 4);
    const int64_t widest = w->kpo > w->kpm ? w->kpo : w->kpm, inputs = w->kp1 > w->kp2 ? w->kp1 : w->kp2;
    w->gts = malloc((size_t)(widest * 32) * 2); w->pairs = malloc((size_t)(inputs * 32) * 2);
    if (!w->xs || !w->zs || !w->gs || !w->ds || !w->zf || !w->yf || !w->dzf || !w->dxf || !w->mid || !w->back
        || !w->gts || !w->pairs) {
        free_scratch(w);
        return -1;
    }
    for (int64_t c = 0; c < k2; c++) w->mid[c] = (int32_t)((c / r) * w->np1 + (c % r) * s);  /* z2[s][b r + q] */
    for (int64_t p = 0; p < sh->p1; p++) w->back[p] = (int32_t)((p % s) * w->npm + p / s);  /* dz[b][q s + s] */
    return 0;
}

/* An operand tile as the GEMMs read it: rows `ld` elements apart, block b at `at + b bs`. */
typedef struct {
    const uint16_t *at;
    int64_t ld, bs;
} operand_t;

/* x read in place although its blocks of k1 = 16 + 32 j inputs are not whole K chunks: block b's window starts
   at b k1 rounded down to 32 (an odd block's inputs are the window's last k1; its packed weights start with 16
   zeros), so every window ends inside the row when b1 is even and the blocks fill it (BTT at d = 512 and 768:
   no staging copy of x). */
static int x_in_pairs(const shape_t *sh) {
    return sh->k1 % KCHUNK == KCHUNK / 2 && sh->b1 % 2 == 0 && sh->b1 * sh->k1 == sh->d_in;
}

/* The tile's rows of a token-major tensor (row length `width` = nb blocks of `block`) read in place when no block
   needs padding (a whole tile of rows, blocks a multiple of KCHUNK that fill the row), else NULL: stage them. */
static const uint16_t *in_place(const uint16_t *rows_at, int64_t rows, int64_t nb, int64_t block, int64_t width) {
    return rows == ROWS && block % KCHUNK == 0 && nb * block == width ? rows_at : NULL;
}

/* x's tile (rows t0.., `rows` of them) through core 1 and the regroup: w->zs holds z2 (bf16) for all 32 rows
   (zero past the last token). Returns x's tile as core 1 read it (in place, or staged in w->xs). */
AMX static operand_t core1_regroup(const shape_t *sh, const scratch_t *w, const uint16_t *x, const uint16_t *w0p,
                                   int64_t t0, int64_t rows) {
    const int64_t b1 = sh->b1, k1 = sh->k1, s = sh->s, k2 = sh->b1 * sh->rank;
    const int pairs = x_in_pairs(sh);
    const uint16_t *rows_at = x + t0 * sh->d_in;
    const uint16_t *at = pairs ? (rows == ROWS ? rows_at : NULL) : in_place(rows_at, rows, b1, k1, sh->d_in);
    operand_t xt = {at, sh->d_in, k1};
    if (!xt.at && pairs) {  /* the last tile: its rows as they are, zero past the last token */
        for (int64_t i = 0; i < ROWS; i++)
            copy_block(w->xs + i * w->xr, rows_at + i * sh->d_in, i < rows ? sh->d_in : 0, sh->d_in);
        xt = (operand_t){w->xs, w->xr, k1};
    } else if (!xt.at) {
        for (int64_t i = 0; i < ROWS; i++)
            for (int64_t b = 0; b < b1; b++)
                copy_block(w->xs + i * w->xr + b * w->kp1, x + (t0 + i) * sh->d_in + b * k1,
                           i < rows ? clamp(sh->d_in - b * k1, 0, k1) : 0, k1);
        xt = (operand_t){w->xs, w->xr, w->kp1};
    }
    block_gemm(xt.at, xt.ld, xt.bs, w0p, b1, w->kp1, w->np1, w->zf, w->zfr, w->np1);
    for (int64_t i = 0; i < ROWS; i++) {
        if (sh->rank == 1 || w->np1 == sh->p1) {  /* rows (b, r) of s: z2 is their transpose */
            const int64_t lds = sh->rank == 1 ? w->np1 : s;
            transpose_convert(w->zs + i * w->zr, w->kp2, w->zf + i * w->zfr, lds, b1 * sh->rank, s, INT64_MAX);
            continue;
        }
        for (int64_t si = 0; si < s; si++) gather_row(w->zs + i * w->zr + si * w->kp2, w->zf + i * w->zfr + si, w->mid, k2);
    }
    return xt;
}

/* dy's tile (rows t0.., `rows` of them) as core 2 transposed reads it: in place, or staged in w->gs per core-2
   block (row, s, q), Monarch's interleaved output gathered, zero past the last token. */
AMX static operand_t dy_tile(const shape_t *sh, const scratch_t *w, const uint16_t *dy, int64_t t0, int64_t rows) {
    const int64_t s = sh->s, p2 = sh->p2;
    const uint16_t *at = sh->interleaved ? NULL : in_place(dy + t0 * sh->d_out, rows, s, p2, sh->d_out);
    if (at) return (operand_t){at, sh->d_out, p2};
    for (int64_t i = 0; i < ROWS; i++) {
        const uint16_t *row = dy + (t0 + i) * sh->d_out;
        for (int64_t si = 0; si < s; si++) {
            uint16_t *dst = w->gs + i * w->gr + si * w->kpo;
            if (i >= rows) {
                copy_block(dst, row, 0, p2);
            } else if (sh->interleaved) {
                for (int64_t q = 0; q < p2; q++) dst[q] = q * s + si < sh->d_out ? row[q * s + si] : 0;
            } else {
                copy_block(dst, row + si * p2, clamp(sh->d_out - si * p2, 0, p2), p2);
            }
        }
    }
    return (operand_t){w->gs, w->gr, w->kpo};
}

AMX static void *forward_tiles(void *arg) {
    job_t *j = (job_t *)arg;
    const shape_t *sh = j->sh;
    const int64_t s = sh->s, p2 = sh->p2;
    scratch_t w;
    if (alloc_scratch(&w, sh)) { j->status = -1; return NULL; }
    configure_tiles();
    for (int64_t tile = j->tile0; tile < j->tile1; tile++) {
        const int64_t t0 = tile * ROWS, rows = sh->n - t0 < ROWS ? sh->n - t0 : ROWS;
        core1_regroup(sh, &w, j->x, j->w0p, t0, rows);
        block_gemm(w.zs, w.zr, w.kp2, j->w1p, s, w.kp2, w.np2, w.yf, w.yr, w.np2);
        for (int64_t i = 0; i < rows; i++) {
            uint16_t *row = j->out + (t0 + i) * sh->d_out;
            if (sh->interleaved) {  /* y[q s + s] = yf[s][q] */
                transpose_convert(row, s, w.yf + i * w.yr, w.np2, s, p2, sh->d_out);
                continue;
            }
            for (int64_t si = 0; si < s; si++)
                convert_row(row + si * p2, w.yf + i * w.yr + si * w.np2, clamp(sh->d_out - si * p2, 0, p2));
        }
    }
    _tile_release();
    free_scratch(&w);
    return NULL;
}

AMX static void *backward_tiles(void *arg) {
    job_t *j = (job_t *)arg;
    const shape_t *sh = j->sh;
    const int64_t b1 = sh->b1, k1 = sh->k1, p1 = sh->p1, r = sh->rank, s = sh->s, p2 = sh->p2;
    scratch_t w;
    if (alloc_scratch(&w, sh)) { j->status = -1; return NULL; }
    configure_tiles();
    for (int64_t tile = j->tile0; tile < j->tile1; tile++) {
        const int64_t t0 = tile * ROWS, rows = sh->n - t0 < ROWS ? sh->n - t0 : ROWS;
        const operand_t xt = core1_regroup(sh, &w, j->x, j->w0p, t0, rows);  /* z2 again, for dW1 */
        const operand_t gt = dy_tile(sh, &w, j->dy, t0, rows);
        block_gemm(gt.at, gt.ld, gt.bs, j->w1tp, s, w.kpo, w.npm, w.dzf, w.dzr, w.npm);
        for (int64_t i = 0; i < ROWS; i++) {  /* invert the regroup and round: dz (row, b, p) */
            if (r == 1 || w.kpm == p1) {  /* dz's blocks (b, r) of s: dz2 transposed */
                transpose_convert(w.ds + i * w.dr, r == 1 ? w.kpm : s, w.dzf + i * w.dzr, w.npm, s, b1 * r, INT64_MAX);
                continue;
            }
            for (int64_t b = 0; b < b1; b++) gather_row(w.ds + i * w.dr + b * w.kpm, w.dzf + i * w.dzr + b * r, w.back, p1);
        }
        block_gemm(w.ds, w.dr, w.kpm, j->w0tp, b1, w.kpm, w.npi, w.dxf, w.dxr, w.npi);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t b = 0; b < b1; b++)
                convert_row(j->out + (t0 + i) * sh->d_in + b * k1, w.dxf + i * w.dxr + b * w.npi,
                            clamp(sh->d_in - b * k1, 0, k1));
        weight_gradient(j->dw1, s, round_up(p2, 16), round_up(b1 * r, 16), gt.at, gt.ld, gt.bs, w.zs, w.zr, w.kp2,
                        w.gts, w.pairs);
        weight_gradient(j->dw0, b1, round_up(p1, 16), round_up(k1, 16), w.ds, w.dr, w.kpm, xt.at, xt.ld, xt.bs,
                        w.gts, w.pairs);
    }
    _tile_release();
    free_scratch(&w);
    return NULL;
}

/* Runs body over the token tiles on nthreads threads (the caller's and the pool's, fan_out.h); jobs[i] is thread
   i's. */
static int run(job_t *jobs, int nthreads, void *(*body)(void *)) {
    fan_out(body, jobs, sizeof(job_t), nthreads);
    for (int i = 0; i < nthreads; i++) if (jobs[i].status) return jobs[i].status;
    return 0;
}

static int thread_count(const shape_t *sh, int nthreads) {
    return fan_out_threads((sh->n + ROWS - 1) / ROWS, nthreads);
}

int amx_two_core_forward(const shape_t *sh, const uint16_t *x, const uint16_t *w0p, const uint16_t *w1p,
                         uint16_t *y, int nthreads) {
    const int64_t tiles = (sh->n + ROWS - 1) / ROWS;
    job_t jobs[FAN_OUT_MAX_THREADS];
    nthreads = thread_count(sh, nthreads);
    for (int i = 0; i < nthreads; i++)
        jobs[i] = (job_t){sh, tiles * i / nthreads, tiles * (i + 1) / nthreads, x, NULL, w0p, w1p, NULL, NULL, y,
                          NULL, NULL, 0};
    return run(jobs, nthreads, forward_tiles);
}

/* dw0 (b1, p1, k1) and dw1 (s, p2, k2) are written in bf16, the sums over every token rounded once. */
int amx_two_core_backward(const shape_t *sh, const uint16_t *x, const uint16_t *dy, const uint16_t *w0p,
                          const uint16_t *w1tp, const uint16_t *w0tp, uint16_t *dx, uint16_t *dw0, uint16_t *dw1,
                          int nthreads) {
    const int64_t tiles = (sh->n + ROWS - 1) / ROWS, k2 = sh->b1 * sh->rank;
    const int64_t po0 = round_up(sh->p1, 16), ki0 = round_up(sh->k1, 16), po1 = round_up(sh->p2, 16);
    const int64_t ki1 = round_up(k2, 16), size0 = sh->b1 * po0 * ki0, size1 = sh->s * po1 * ki1;
    job_t jobs[FAN_OUT_MAX_THREADS];
    nthreads = thread_count(sh, nthreads);
    float *acc = calloc((size_t)(nthreads * (size0 + size1)), 4);
    if (!acc) return -1;
    for (int i = 0; i < nthreads; i++)
        jobs[i] = (job_t){sh, tiles * i / nthreads, tiles * (i + 1) / nthreads, x, dy, w0p, NULL, w1tp, w0tp, dx,
                          acc + i * (size0 + size1), acc + i * (size0 + size1) + size0, 0};
    const int status = run(jobs, nthreads, backward_tiles);
    for (int i = 1; i < nthreads; i++)
        for (int64_t e = 0; e < size0 + size1; e++) acc[e] += acc[i * (size0 + size1) + e];
    for (int64_t b = 0; b < sh->b1; b++)  /* drop the padding, round once */
        for (int64_t p = 0; p < sh->p1; p++)
            for (int64_t k = 0; k < sh->k1; k++)
                dw0[(b * sh->p1 + p) * sh->k1 + k] = to_bf16_scalar(acc[(b * po0 + p) * ki0 + k]);
    for (int64_t b = 0; b < sh->s; b++)
        for (int64_t q = 0; q < sh->p2; q++)
            for (int64_t c = 0; c < k2; c++)
                dw1[(b * sh->p2 + q) * k2 + c] = to_bf16_scalar(acc[size0 + (b * po1 + q) * ki1 + c]);
    free(acc);
    return status;
}

int amx_two_core_x_in_pairs(const shape_t *sh) { return x_in_pairs(sh); }

typedef struct {
    int64_t r0, r1, d;
    const uint16_t *a, *b;
    float *out;
} dots_job_t;

AMX static inline __m512 bf16_to_fp32(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

AMX static void *row_dots_rows(void *arg) {
    const dots_job_t *j = (const dots_job_t *)arg;
    for (int64_t r = j->r0; r < j->r1; r++) {
        const uint16_t *a = j->a + r * j->d, *b = j->b + r * j->d;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t c = 0; c < j->d; c += 16) {
            const __mmask16 m = first(j->d - c);
            acc = _mm512_fmadd_ps(bf16_to_fp32(_mm256_maskz_loadu_epi16(m, a + c)),
                                  bf16_to_fp32(_mm256_maskz_loadu_epi16(m, b + c)), acc);
        }
        j->out[r] = _mm512_reduce_add_ps(acc);
    }
    return NULL;
}

/* out[r] = sum_c a[r, c] b[r, c] for r < n: bf16 rows (d apart), each product exact in fp32 and summed there (a
   routed expert's gate gradient, one pass over both operands). */
void amx_two_core_row_dots(int64_t n, int64_t d, const uint16_t *a, const uint16_t *b, float *out, int nthreads) {
    nthreads = fan_out_threads(n, nthreads);
    dots_job_t jobs[FAN_OUT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++) jobs[i] = (dots_job_t){n * i / nthreads, n * (i + 1) / nthreads, d, a, b, out};
    fan_out(row_dots_rows, jobs, sizeof(dots_job_t), nthreads);
}

/* out (nb, N / 16, K / 2, 16, 2), N and K padded to 16s and 32s with zeros = w (nb, n, k; strides sb, sn, sk in
   elements) as B tiles: out[b][nc][kk][c][e] = w[b][16 nc + c][2 kk + e - o_b], the kernel's VNNI weight layout,
   with block b's inputs shifted by o_b = (b shift) mod 32 (core 1 under x_in_pairs: shift = k1, o_b 0 or 16, which
   round_up(k, 32) still holds; else 0). */
void amx_two_core_pack(const uint16_t *w, int64_t nb, int64_t n, int64_t k, int64_t sb, int64_t sn, int64_t sk,
                       int64_t shift, uint16_t *out) {
    const int64_t np = round_up(n, NCHUNK), kp = round_up(k, KCHUNK);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t nc = 0; nc < np / NCHUNK; nc++)
            for (int64_t kk = 0; kk < kp / 2; kk++)
                for (int64_t c = 0; c < NCHUNK; c++)
                    for (int64_t e = 0; e < 2; e++) {
                        const int64_t row = nc * NCHUNK + c, col = 2 * kk + e - (b * shift) % KCHUNK;
                        *out++ = row < n && col >= 0 && col < k ? w[b * sb + row * sn + col * sk] : 0;
                    }
}

int amx_two_core_supported(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0;  /* AMX-TILE, AMX-BF16 */
    if (!(b & (1u << 16)) || !(b & (1u << 30)) || !(b & (1u << 31))) return 0;  /* AVX512 F, BW, VL */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return 0;  /* AVX512-BF16 */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

typedef struct {
    int64_t t0, t1, k, d;
    const uint16_t *rows;
    const int64_t *slots;
    const float *weights;
    uint16_t *out;
} combine_job_t;

AMX static void *combine_rows(void *arg) {
    const combine_job_t *j = (const combine_job_t *)arg;
    for (int64_t t = j->t0; t < j->t1; t++) {
        const int64_t *slot = j->slots + t * j->k;
        for (int64_t c = 0; c < j->d; c += 16) {
            const __mmask16 m = first(j->d - c);
            __m512 acc = _mm512_setzero_ps();
            for (int64_t i = 0; i < j->k; i++) {
                const __m512 w = _mm512_set1_ps(j->weights ? j->weights[slot[i]] : 1.0f);
                acc = _mm512_fmadd_ps(w, bf16_to_fp32(_mm256_maskz_loadu_epi16(m, j->rows + slot[i] * j->d + c)), acc);
            }
            _mm256_mask_storeu_epi16(j->out + t * j->d + c, m, (__m256i)_mm512_cvtneps_pbh(acc));
        }
    }
    return NULL;
}

/* out[t] = bf16(sum_i weights[s] rows[s]) over the k slots s = slots[t, i] of each token t < n (weights 1 when
   NULL): bf16 rows, fp32 weights, the products and sums in fp32 and rounded once; a mixture's slots added back per
   token in one pass, each out row written once. */
void amx_two_core_combine(int64_t n, int64_t k, int64_t d, const uint16_t *rows, const int64_t *slots,
                          const float *weights, uint16_t *out, int nthreads) {
    nthreads = fan_out_threads(n, nthreads);
    combine_job_t jobs[FAN_OUT_MAX_THREADS];
    for (int i = 0; i < nthreads; i++)
        jobs[i] = (combine_job_t){n * i / nthreads, n * (i + 1) / nthreads, k, d, rows, slots, weights, out};
    fan_out(combine_rows, jobs, sizeof(combine_job_t), nthreads);
}

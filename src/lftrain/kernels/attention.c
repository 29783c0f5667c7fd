/* Attention probabilities in one pass each way: scaling, key-padding mask, softmax and dropout.
 *
 * In eager PyTorch (transformers' eager attention) the scores of a BERT layer go through four operators forward
 * (scale, add the mask, softmax, dropout) and three backward, each a pass over batch x heads x queries x keys
 * with short rows (40 keys in a batch of reviews): torch's bf16 softmax spends most of its time per row, not per
 * element. Here each row of scores is read once, the softmax is computed in float over the real keys (padding
 * keys get probability 0, as adding the mask's large negative value gives), and two bf16 tensors are written:
 * the probabilities y (saved for backward) and dropout(y), with the mask of kernels/dropout.c (element j of the
 * call, keys k0 and k1). Backward needs no hash: an element was kept exactly where dropout(y) is non-zero or y
 * is zero (a kept non-zero probability times 1/(1-p) stays non-zero in bf16).
 *
 * A row is handled 16 keys at a time in AVX-512 registers. Without AVX-512 only lft_attn_available() is built
 * (it returns 0) and callers keep torch's operators: plain C loops over rows this short were slower than them.
 * exp is Cephes' expf polynomial (relative error ~1e-7; the sums run in a different order than torch's), so
 * probabilities can differ from torch's in the last bf16 bit.
 */
#include "common.h"
#include <math.h>

#define MAX_KEYS 8192

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

static inline __m512 load_bf16(const uint16_t *p, __mmask16 k) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* Round to bf16 (to nearest, ties to even; NaN stays NaN), kept in the low 16 bits of each 32-bit lane. */
static inline __m512i round_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
}

static inline __m512 widen_bf16(__m512i r) { return _mm512_castsi512_ps(_mm512_slli_epi32(r, 16)); }

static inline void store_bf16(uint16_t *p, __mmask16 k, __m512i r) {
    _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(r));
}

static inline __m512i mix16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bU));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* hash(j) >= threshold for j = first, first + 1, ..., first + 15 (as hash() in common.h) */
static inline __mmask16 kept16(int64_t first, uint32_t k0, uint32_t k1, uint32_t threshold) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i j = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)first), lanes);
    __m512i h = _mm512_add_epi32(_mm512_mullo_epi32(j, _mm512_set1_epi32((int)0x9E3779B9U)), _mm512_set1_epi32((int)k0));
    h = mix16(_mm512_xor_si512(mix16(h), _mm512_set1_epi32((int)k1)));
    return _mm512_cmpge_epu32_mask(h, _mm512_set1_epi32((int)threshold));
}

/* e^x, 0 below -87.3 (and for -inf) */
static inline __m512 exp16(__m512 x) {
    __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    f = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), f);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.0000001201E-1f));
    __m512 r = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(f, f), f), _mm512_set1_ps(1.0f));
    r = _mm512_scalef_ps(r, n);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_GE_OQ), r);
}

static inline __mmask16 tail(int64_t c, int64_t keys) {
    int64_t left = keys - c;
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1U << left) - 1U);
}

static void probs_row(const uint16_t *s, const uint8_t *real, uint16_t *y, uint16_t *out, int64_t keys,
                      int64_t base, float scaling, uint32_t k0, uint32_t k1, uint32_t threshold, float scale) {
    float e[MAX_KEYS] __attribute__((aligned(64)));
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t c = 0; c < keys; c += 16) {
        __mmask16 k = tail(c, keys);
        __mmask16 live = _mm_mask_cmpneq_epi8_mask(k, _mm_maskz_loadu_epi8(k, real + c), _mm_setzero_si128());
        __m512 v = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), live, load_bf16(s + c, k), _mm512_set1_ps(scaling));
        _mm512_store_ps(e + c, v);
        vmax = _mm512_max_ps(vmax, v);
    }
    __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t c = 0; c < keys; c += 16) {
        __m512 x = exp16(_mm512_sub_ps(_mm512_load_ps(e + c), mx));  /* -inf - -inf (a row of padding) is NaN: 0 */
        x = _mm512_maskz_mov_ps(tail(c, keys), x);
        _mm512_store_ps(e + c, x);
        vsum = _mm512_add_ps(vsum, x);
    }
    float sum = _mm512_reduce_add_ps(vsum);
    __m512 inv = _mm512_set1_ps(sum > 0.0f ? 1.0f / sum : 0.0f);
    for (int64_t c = 0; c < keys; c += 16) {
        __mmask16 k = tail(c, keys);
        __m512i p = round_bf16(_mm512_mul_ps(_mm512_load_ps(e + c), inv));
        store_bf16(y + c, k, p);
        if (out) {
            __m512i kept = round_bf16(_mm512_mul_ps(widen_bf16(p), _mm512_set1_ps(scale)));
            store_bf16(out + c, k, _mm512_maskz_mov_epi32(kept16(base + c, k0, k1, threshold), kept));
        }
    }
}

static void grad_row(const uint16_t *g, const uint16_t *y, const uint16_t *out, uint16_t *gs, int64_t keys,
                     float scaling, float scale) {
    float d[MAX_KEYS] __attribute__((aligned(64)));
    __m512 vdot = _mm512_setzero_ps();
    for (int64_t c = 0; c < keys; c += 16) {
        __mmask16 k = tail(c, keys);
        __mmask16 kept = _mm256_mask_cmpneq_epi16_mask(k, _mm256_maskz_loadu_epi16(k, out + c), _mm256_setzero_si256());
        __m512 v = _mm512_maskz_mul_ps(kept, load_bf16(g + c, k), _mm512_set1_ps(scale));
        _mm512_store_ps(d + c, v);
        vdot = _mm512_fmadd_ps(v, load_bf16(y + c, k), vdot);
    }
    __m512 dot = _mm512_set1_ps(_mm512_reduce_add_ps(vdot));
    for (int64_t c = 0; c < keys; c += 16) {
        __mmask16 k = tail(c, keys);
        __m512 r = _mm512_mul_ps(_mm512_mul_ps(load_bf16(y + c, k), _mm512_sub_ps(_mm512_load_ps(d + c), dot)),
                                 _mm512_set1_ps(scaling));
        store_bf16(gs + c, k, round_bf16(r));
    }
}

int lft_attn_available(void) { return 1; }

/* s: scores (rows x keys, rows = batch x heads x queries, row-major), real: (batch x keys) 1 for a real key,
 * per_batch: rows per example (heads x queries). Writes y = softmax and, unless out is NULL, out = dropout(y). */
void lft_attn_probs_bf16(const uint16_t *restrict s, const uint8_t *restrict real, uint16_t *restrict y,
                         uint16_t *restrict out, int64_t rows, int64_t per_batch, int64_t keys, float scaling,
                         uint32_t k0, uint32_t k1, uint32_t threshold, float scale) {
    #pragma omp parallel for schedule(static) if (rows * keys >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        probs_row(s + r * keys, real + (r / per_batch) * keys, y + r * keys, out ? out + r * keys : 0, keys,
                  r * keys, scaling, k0, k1, threshold, scale);
}

/* The gradient of the scores from the gradient g of out (or of y when out is y: no dropout). */
void lft_attn_probs_grad_bf16(const uint16_t *restrict g, const uint16_t *restrict y, const uint16_t *out,
                              uint16_t *restrict gs, int64_t rows, int64_t keys, float scaling, float scale) {
    #pragma omp parallel for schedule(static) if (rows * keys >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        grad_row(g + r * keys, y + r * keys, out + r * keys, gs + r * keys, keys, scaling, scale);
}

#else  /* without AVX-512 the row-at-a-time loops lose to torch's operators (measured): the callers keep torch's */

int lft_attn_available(void) { return 0; }

#endif

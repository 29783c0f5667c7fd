/* Dropout in one pass over the tensor, with the random bits hashed from each element's index.
 *
 * torch's dropout draws a random number per element (bernoulli_) and lftrain's torch-only fallback draws
 * the gaps between drops (~10 small operators a call, see models/fast_dropout.py); either way dropout is
 * several passes and many operator calls. Here element j of a call is kept when
 *     h(j) = mix(mix(j * golden + k0) ^ k1) >= threshold,  threshold = round(p * 2^32),
 * mix being a 32-bit avalanche hash (lowbias32, by C. Wellons) and (k0, k1) 63 random bits drawn from torch's
 * generator for the call. So the drop rate is p to within 2^-33, the mask is a function of the keys alone
 * (backward recomputes it: nothing is saved), and the loop vectorises: no data-dependent control flow.
 * Kept values are x * scale computed in float, rounded to bf16 to nearest even as torch rounds.
 */
#include "common.h"

void lft_dropout_bf16(const uint16_t *restrict x, uint16_t *restrict y, int64_t n, uint32_t k0, uint32_t k1,
                      uint32_t threshold, float scale) {
    #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        uint32_t kept = float_to_bf16(bf16_to_float(x[j]) * scale);
        y[j] = (uint16_t)(hash(j, k0, k1) >= threshold ? kept : 0U);
    }
}

void lft_dropout_float(const float *restrict x, float *restrict y, int64_t n, uint32_t k0, uint32_t k1,
                       uint32_t threshold, float scale) {
    #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        y[j] = hash(j, k0, k1) >= threshold ? x[j] * scale : 0.0f;
    }
}

/* Dropout feeding a residual connection: out = residual + dropout(x), x bf16 (a bf16 matmul's output) and the
 * residual stream float, as in a transformer block under autocast. The dropped-and-scaled value is rounded to
 * bf16 before the add, exactly as separate dropout and add operators compute it. */
void lft_dropout_add_bf16(const uint16_t *restrict x, const float *restrict residual, float *restrict out,
                          int64_t n, uint32_t k0, uint32_t k1, uint32_t threshold, float scale) {
    #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        float kept = bf16_to_float(float_to_bf16(bf16_to_float(x[j]) * scale));
        out[j] = residual[j] + (hash(j, k0, k1) >= threshold ? kept : 0.0f);
    }
}

/* Its gradient for x: the float gradient rounded to bf16 (as the add's backward casts it), then dropped and
 * scaled (as dropout's backward does), in one pass. */
void lft_dropout_add_grad_bf16(const float *restrict grad, uint16_t *restrict out, int64_t n, uint32_t k0,
                               uint32_t k1, uint32_t threshold, float scale) {
    #pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (int64_t j = 0; j < n; j++) {
        uint32_t kept = float_to_bf16(bf16_to_float(float_to_bf16(grad[j])) * scale);
        out[j] = (uint16_t)(hash(j, k0, k1) >= threshold ? kept : 0U);
    }
}

/* Helpers shared by the kernels: the dropout hash and bf16 <-> float conversions as torch rounds them. */
#ifndef LFT_COMMON_H
#define LFT_COMMON_H
#include <stdint.h>

static inline uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline uint32_t hash(int64_t j, uint32_t k0, uint32_t k1) {
    return mix(mix((uint32_t)j * 0x9E3779B9U + k0) ^ k1);
}

static inline float bf16_to_float(uint16_t b) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)b << 16;
    return v.f;
}

static inline uint16_t float_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t u = v.u;
    uint32_t rounded = (u + 0x7FFFU + ((u >> 16) & 1U)) >> 16;  /* to nearest, ties to even */
    uint32_t quiet_nan = (u >> 16) | 0x40U;                     /* rounding must not turn a NaN into inf */
    return (uint16_t)(((u & 0x7FFFFFFFU) > 0x7F800000U) ? quiet_nan : rounded);
}

/* Below this many elements a second thread costs more than it saves. */
#define PARALLEL_MIN 32768

#endif

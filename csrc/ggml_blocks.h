// GGUF weight block layouts (as written by ggml) and the activation blocks kt
// quantizes x into. One packed struct per format; sizes pinned by static_assert.
#pragma once
#include <cstdint>
#include <cstring>

namespace kt {

enum GgmlType : int {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6,
    GGML_Q5_1 = 7, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14,
    GGML_BF16 = 30, GGML_TYPE_COUNT = 31,
};

constexpr int QK = 32;    // values per block of the 32-block formats
constexpr int QK_K = 256; // values per K-quant super-block

#pragma pack(push, 1)
struct block_q4_0 { uint16_t d; uint8_t qs[QK / 2]; };
struct block_q4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };
struct block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct block_q8_0 { uint16_t d; int8_t qs[QK]; };
struct block_q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct block_q5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct block_q6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };

// Activations. a32: 32 int8 with f32 scale d, s = d * sum(qs) rounded to f16 as
// llama.cpp's Q8_1 has it (for the formats with a min), and the exact integer
// sum (for the formats with an offset, which llama.cpp subtracts exactly).
struct block_a32 { float d, s; int32_t sum; int8_t qs[QK]; };
// aK: Q8_K, 256 int8 with f32 scale and the sums of each 16 values.
struct block_aK { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };
#pragma pack(pop)

static_assert(sizeof(block_q4_0) == 18, "q4_0");
static_assert(sizeof(block_q4_1) == 20, "q4_1");
static_assert(sizeof(block_q5_0) == 22, "q5_0");
static_assert(sizeof(block_q5_1) == 24, "q5_1");
static_assert(sizeof(block_q8_0) == 34, "q8_0");
static_assert(sizeof(block_q4_K) == 144, "q4_K");
static_assert(sizeof(block_q5_K) == 176, "q5_K");
static_assert(sizeof(block_q6_K) == 210, "q6_K");
static_assert(sizeof(block_a32) == 44, "a32");
static_assert(sizeof(block_aK) == 292, "aK");

// Helpers are `static` so that each ISA's translation unit keeps its own copy:
// an inline function shared across TUs compiled with different -m flags could
// be resolved by the linker to the AVX-512 build and then run on any CPU.
static inline float fp16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else {  // subnormal: renormalise
        int e = -1;
        do { man <<= 1; ++e; } while (!(man & 0x400));
        bits = sign | uint32_t(112 - e) << 23 | ((man & 0x3ff) << 13);
    }
    float f; std::memcpy(&f, &bits, 4); return f;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16; float f; std::memcpy(&f, &bits, 4); return f;
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block.
static inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) { *sc = q[j] & 63; *m = q[j + 4] & 63; }
    else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

}  // namespace kt

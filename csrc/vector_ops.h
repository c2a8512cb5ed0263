// The non-matmul kernels of a fused forward: causal attention over one
// sequence's f16 key/value cache, f16 stores, gated activations. One source
// (vector_ops_impl.h) compiled once per ISA; the table is chosen at run time.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace kt {

// Query heads [head0, head0 + group) of tokens [0, n) over the cache of their
// shared key/value head. Row i of the problem is token i / group, head i % group.
// Keys are stored transposed (dimension-major), so a tile of consecutive keys is one
// contiguous load; values are stored key-major.
struct AttentionRows {
    const float* q;       // head0 of token 0 (after rope); token t at q + t * q_stride
    int q_stride;
    int group;            // query heads in this problem (sharing one key/value head)
    const int* pos;       // [n] position of each token, increasing
    int n;
    const uint16_t* kt;   // dimension d of key j at kt + d * kt_stride + j (f16)
    int kt_stride;        // >= every key read, rounded up to whole tiles of 16 keys
    const uint16_t* v;    // value j at v + j * v_stride (f16)
    int v_stride;
    int head_dim;         // a multiple of 16
    float scale;
    int window;           // a row at p sees keys p - window < j <= p; 0: all j <= p
    float* out;           // laid out like q
    int out_stride;
};

// Per-thread scratch, grown as needed and reused across calls.
struct AttentionScratch { std::vector<float> scores; };

struct VectorOps {
    void (*attend)(const AttentionRows&, AttentionScratch&);
    void (*to_f16)(const float* x, uint16_t* y, int n);
    void (*silu_mul)(float* g, const float* u, int n);  // g = silu(g) * u
    void (*rms_norm)(const float* x, const float* w, float* y, int n, float eps);  // y = x / rms(x) * w (y may be x)
    // g = gelu_tanh(g) * u, gelu looked up in a table over all f16 inputs as llama.cpp does
    void (*gelu_mul)(float* g, const float* u, int n, const float* gelu_table);
};

const VectorOps& vector_ops_scalar();
const VectorOps& vector_ops_avx2();
const VectorOps& vector_ops_avx512();
const VectorOps& vector_ops(Isa isa);
// 65536 entries indexed by the f16 bits of the input: gelu of that f16 value, rounded to f16
// (llama.cpp's table) and held as f32 so that a lookup needs no conversion.
const float* gelu_f16_table();

}  // namespace kt

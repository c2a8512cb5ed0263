// Routed experts of a mixture-of-experts layer in one call: the tokens are grouped per
// expert, and every thread of the pool works on each expert in turn (its rows split
// across threads), so prefill runs matrix-matrix (AMX tiles where the CPU has them) and
// decode matrix-vector.
#pragma once
#include <cstdint>

#include "matmul.h"

namespace kt {

struct StackedWeights {
    const uint8_t* data;  // n_experts matrices of [rows, cols] GGUF blocks, one after another
    int type;
    int n_experts, rows, cols;
    size_t row_bytes() const;
    const uint8_t* expert(int e) const { return data + size_t(e) * rows * row_bytes(); }
};

// y [T, dim] = sum over k of weights[t, k] * down_e(silu(gate_e(x_t)) * up_e(x_t)), e = ids[t, k].
void moe_forward(const float* x, int T, const int32_t* ids, const float* weights, int top_k,
                 const StackedWeights& gate, const StackedWeights& up, const StackedWeights& down,
                 float* y, Isa isa, ThreadPool& pool);

}  // namespace kt

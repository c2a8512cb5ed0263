// Routed experts of a mixture-of-experts layer in one call: the tokens are grouped per
// expert, and every thread of the pool works on each expert in turn (its rows split
// across threads), so prefill runs matrix-matrix (AMX tiles where the CPU has them) and
// decode matrix-vector.
#pragma once
#include <cstdint>
#include <vector>

#include "matmul.h"

namespace kt {

struct StackedWeights {
    const uint8_t* data;  // n_experts matrices of [rows, cols] GGUF blocks, one after another
    int type;
    int n_experts, rows, cols;
    size_t row_bytes() const;
    const uint8_t* expert(int e) const { return data + size_t(e) * rows * row_bytes(); }
};

// Which (token, slot) pairs each expert serves, and the work space for them.
struct MoePlan {
    std::vector<int> offset, slots;  // expert e serves slots[offset[e] .. offset[e + 1]) (slot = t * top_k + k)
    int most = 0;                    // the most slots any expert serves
    std::vector<float> xe, hg, hu, ye;
    std::vector<uint8_t> act_in, act_up, act_down;
    // Group ids [T, top_k] by expert and size the work space (throws on an id out of range).
    void build(const int32_t* ids, int T, int top_k, const StackedWeights& gate, const StackedWeights& up,
               const StackedWeights& down, Isa isa);
};

// Thread tid's share of the routed experts, between the barriers of a team of nth threads
// (every thread calls it; y rows are zeroed here first).
void moe_team(MoePlan& plan, const float* x, int T, const float* weights, int top_k, const StackedWeights& gate,
              const StackedWeights& up, const StackedWeights& down, float* y, Isa isa, int tid, int nth,
              SpinBarrier& barrier);

// y [T, dim] = sum over k of weights[t, k] * down_e(silu(gate_e(x_t)) * up_e(x_t)), e = ids[t, k].
void moe_forward(const float* x, int T, const int32_t* ids, const float* weights, int top_k,
                 const StackedWeights& gate, const StackedWeights& up, const StackedWeights& down,
                 float* y, Isa isa, ThreadPool& pool);

}  // namespace kt

#pragma once
#include "kernels.h"
#include "thread_pool.h"

namespace kt {

struct MatmulArgs {
    const uint8_t* w;   // [rows, row_bytes] weight blocks, rows contiguous
    int ggml_type;
    int rows, cols;
    const float* x;     // [T, cols]
    int T;
    float* y;           // [T, rows]
};

// y = x @ W^T with the dots of `isa` (scalar for a type the ISA lacks).
void matmul(const MatmulArgs& args, Isa isa, ThreadPool& pool);

}  // namespace kt

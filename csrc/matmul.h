#pragma once
#include <vector>

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

// Checks the type and shape; the activation format the weight wants.
ActFormat matmul_act_format(int ggml_type, int cols);
// The format x must be in for a matmul of T tokens with this weight type on `isa`:
// bf16 where the AMX tiles take the batch, else the weight type's own.
ActFormat act_format(int ggml_type, Isa isa, int T);

// One row of activations x [n] into format f's blocks at `dst`, with the ISA's quantizer.
void quantize_row(ActFormat f, const float* x, void* dst, int n, Isa isa);

// The two halves of a matmul as run by one thread `tid` of a team of `nth`:
// quantize its share of x's rows into `act` (act_row_bytes per row), then,
// after a barrier, compute its share of y's rows from the quantized x.
void quantize_part(ActFormat f, const float* x, int T, int cols, uint8_t* act, Isa isa, int tid, int nth);
// Rows [t0, t1) of x [., cols] into `act` (nothing for f32).
void quantize_part_rows(ActFormat f, const float* x, int t0, int t1, int cols, uint8_t* act, Isa isa);
void matmul_part(const MatmulArgs& a, const uint8_t* act, Isa isa, int tid, int nth);

// y = x @ W^T with the dots of `isa` (scalar for a type the ISA lacks), on the whole pool.
void matmul(const MatmulArgs& args, Isa isa, ThreadPool& pool);

}  // namespace kt

// The matmul driver: quantize x once, then tiles of (weight rows x tokens) over
// the pool. Compiled with no ISA flags; all SIMD lives behind the DotFn table.
#include "matmul.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace kt {
namespace {

constexpr int kRowsPerTask = 16;  // weight rows a task owns
constexpr int kTokenTile = 32;    // tokens swept per weight row while it is hot in L1

const DotTable& dots_for(Isa isa) {
    switch (isa) {
        case Isa::avx512: return dots_avx512();
        case Isa::avx2: return dots_avx2();
        default: return dots_scalar();
    }
}

std::vector<uint8_t> quantize_activations(const MatmulArgs& a, ActFormat f, ThreadPool& pool) {
    const size_t row_bytes = act_row_bytes(f, a.cols);
    std::vector<uint8_t> q(row_bytes * size_t(a.T));
    pool.parallel_for(a.T, [&](int t) {
        const float* x = a.x + size_t(t) * a.cols;
        void* dst = q.data() + row_bytes * t;
        if (f == ActFormat::a32) quantize_row_a32(x, static_cast<block_a32*>(dst), a.cols);
        else quantize_row_aK(x, static_cast<block_aK*>(dst), a.cols);
    });
    return q;
}

}  // namespace

void matmul(const MatmulArgs& a, Isa isa, ThreadPool& pool) {
    const QuantTraits& tr = quant_traits(a.ggml_type);
    if (tr.block_size == 0) throw std::invalid_argument("kt._kernels: unsupported ggml type " + std::to_string(a.ggml_type));
    if (a.cols % tr.block_size != 0) throw std::invalid_argument("kt._kernels: cols is not a multiple of the block size");
    DotFn dot = dots_for(isa).dot[a.ggml_type];
    if (!dot) dot = dots_scalar().dot[a.ggml_type];

    std::vector<uint8_t> xq;
    const void* act = a.x;
    if (tr.act != ActFormat::f32) act = (xq = quantize_activations(a, tr.act, pool)).data();

    const int nblocks = a.cols / tr.block_size;
    const size_t w_row = size_t(nblocks) * tr.type_size, act_row = act_row_bytes(tr.act, a.cols);
    const uint8_t* acts = static_cast<const uint8_t*>(act);
    const int n_tasks = (a.rows + kRowsPerTask - 1) / kRowsPerTask;
    pool.parallel_for(n_tasks, [&](int task) {
        const int r0 = task * kRowsPerTask, r1 = std::min(a.rows, r0 + kRowsPerTask);
        for (int t0 = 0; t0 < a.T; t0 += kTokenTile) {
            const int t1 = std::min(a.T, t0 + kTokenTile);
            for (int r = r0; r < r1; ++r) {
                const uint8_t* w = a.w + w_row * r;
                for (int t = t0; t < t1; ++t) a.y[size_t(t) * a.rows + r] = dot(nblocks, w, acts + act_row * t);
            }
        }
    });
}

}  // namespace kt

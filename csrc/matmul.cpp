// The matmul driver: quantize x once, then tiles of (weight rows x tokens),
// each thread owning a contiguous band of weight rows. Compiled with no ISA
// flags; all SIMD lives behind the DotFn table.
#include "matmul.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kt {
namespace {

constexpr int kRowAlign = 16;   // thread bands start on a multiple of this many rows
constexpr int kRowTile = 16;    // weight rows swept per token tile
constexpr int kTokenTile = 32;  // tokens swept per weight row while it is hot in L1

const DotTable& dots_for(Isa isa) {
    switch (isa) {
        case Isa::amx:  // below kAmxMinTokens, and for formats the tiles lack
        case Isa::avx512: return dots_avx512();
        case Isa::avx2: return dots_avx2();
        default: return dots_scalar();
    }
}

// [begin, end) of n items for thread tid of nth, in units of `align`.
inline std::pair<int, int> band(int n, int tid, int nth, int align) {
    const int units = (n + align - 1) / align;
    const int b = int(int64_t(units) * tid / nth) * align, e = int(int64_t(units) * (tid + 1) / nth) * align;
    return {std::min(n, b), std::min(n, e)};
}

}  // namespace

ActFormat matmul_act_format(int ggml_type, int cols) {
    const QuantTraits& tr = quant_traits(ggml_type);
    if (tr.block_size == 0) throw std::invalid_argument("kt._kernels: unsupported ggml type " + std::to_string(ggml_type));
    if (cols <= 0 || cols % tr.block_size != 0)
        throw std::invalid_argument("kt._kernels: cols is not a positive multiple of the block size");
    return tr.act;
}

ActFormat act_format(int ggml_type, Isa isa, int T) {
    if (isa == Isa::amx && T >= kAmxMinTokens && amx_supports(ggml_type)) return ActFormat::bf16;
    return quant_traits(ggml_type).act;
}

void quantize_row(ActFormat f, const float* x, void* dst, int n, Isa isa) {
    if (f == ActFormat::bf16) return quantize_bf16(x, dst, n);
    if (const QuantizeFn q = dots_for(isa).quantize[int(f)]) return q(x, dst, n);
    if (f == ActFormat::a32) quantize_row_a32(x, static_cast<block_a32*>(dst), n);
    else if (f == ActFormat::aK) quantize_row_aK(x, static_cast<block_aK*>(dst), n);
}

void quantize_part_rows(ActFormat f, const float* x, int t0, int t1, int cols, uint8_t* act, Isa isa) {
    if (f == ActFormat::f32) return;
    const size_t row_bytes = act_row_bytes(f, cols);
    for (int t = t0; t < t1; ++t) quantize_row(f, x + size_t(t) * cols, act + row_bytes * t, cols, isa);
}

void quantize_part(ActFormat f, const float* x, int T, int cols, uint8_t* act, Isa isa, int tid, int nth) {
    const auto [t0, t1] = band(T, tid, nth, 1);
    quantize_part_rows(f, x, t0, t1, cols, act, isa);
}

void matmul_part(const MatmulArgs& a, const uint8_t* act, Isa isa, int tid, int nth) {
    const QuantTraits& tr = quant_traits(a.ggml_type);
    DotFn dot = dots_for(isa).dot[a.ggml_type];
    if (!dot) dot = dots_scalar().dot[a.ggml_type];
    if (tr.act == ActFormat::f32) act = reinterpret_cast<const uint8_t*>(a.x);
    const int nblocks = a.cols / tr.block_size;
    const size_t w_row = size_t(nblocks) * tr.type_size, act_row = act_row_bytes(tr.act, a.cols);
    const auto [r_begin, r_end] = band(a.rows, tid, nth, kRowAlign);
    if (act_format(a.ggml_type, isa, a.T) == ActFormat::bf16) {
        if (r_begin < r_end)
            amx_matmul_rows(a.w, a.ggml_type, a.rows, a.cols, reinterpret_cast<const uint16_t*>(act), a.T, a.y, r_begin, r_end);
        return;
    }
    const TileFn tile = dots_for(isa).tile[a.ggml_type];
    if (tile && a.T > 1) {
        // A few weight rows stay in L1 while every token streams past them.
        for (int r0 = r_begin; r0 < r_end; r0 += kTileSize) {
            const int nr = std::min(kTileSize, r_end - r0);
            for (int t0 = 0; t0 < a.T; t0 += kTileSize)
                tile(nblocks, a.w + w_row * r0, w_row, nr, act + act_row * t0, act_row, std::min(kTileSize, a.T - t0),
                     a.y + size_t(t0) * a.rows + r0, size_t(a.rows));
        }
        return;
    }
    for (int r0 = r_begin; r0 < r_end; r0 += kRowTile) {
        const int r1 = std::min(r_end, r0 + kRowTile);
        for (int t0 = 0; t0 < a.T; t0 += kTokenTile) {
            const int t1 = std::min(a.T, t0 + kTokenTile);
            for (int r = r0; r < r1; ++r) {
                const uint8_t* w = a.w + w_row * r;
                for (int t = t0; t < t1; ++t) a.y[size_t(t) * a.rows + r] = dot(nblocks, w, act + act_row * t);
            }
        }
    }
}

void matmul(const MatmulArgs& a, Isa isa, ThreadPool& pool) {
    matmul_act_format(a.ggml_type, a.cols);  // validates
    const ActFormat f = act_format(a.ggml_type, isa, a.T);
    std::vector<uint8_t> act(f == ActFormat::f32 ? 0 : act_row_bytes(f, a.cols) * size_t(a.T));
    SpinBarrier barrier(pool.size());
    pool.run_team([&](int tid) {
        const int nth = pool.size();
        quantize_part(f, a.x, a.T, a.cols, act.data(), isa, tid, nth);
        barrier.wait();
        matmul_part(a, act.data(), isa, tid, nth);
    });
}

}  // namespace kt

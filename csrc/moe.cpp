#include "moe.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "vector_ops.h"

namespace kt {

size_t StackedWeights::row_bytes() const {
    const QuantTraits& tr = quant_traits(type);
    return size_t(cols / tr.block_size) * tr.type_size;
}

namespace {

inline std::pair<int, int> band(int n, int tid, int nth) {
    return {int(int64_t(n) * tid / nth), int(int64_t(n) * (tid + 1) / nth)};
}

}  // namespace

void moe_forward(const float* x, int T, const int32_t* ids, const float* weights, int top_k,
                 const StackedWeights& gate, const StackedWeights& up, const StackedWeights& down,
                 float* y, Isa isa, ThreadPool& pool) {
    const int dim = gate.cols, ffn = gate.rows, E = gate.n_experts;
    if (up.rows != ffn || up.cols != dim || down.rows != dim || down.cols != ffn || up.n_experts != E || down.n_experts != E)
        throw std::invalid_argument("moe: gate, up and down shapes disagree");
    for (const StackedWeights* w : {&gate, &up, &down}) matmul_act_format(w->type, w->cols);
    // The (token, slot) pairs of each expert, grouped: slots[offset[e] .. offset[e + 1]).
    std::vector<int> offset(E + 1, 0), slots(size_t(T) * top_k);
    for (int i = 0; i < T * top_k; ++i) {
        if (ids[i] < 0 || ids[i] >= E) throw std::invalid_argument("moe: expert id out of range");
        ++offset[ids[i] + 1];
    }
    for (int e = 0; e < E; ++e) offset[e + 1] += offset[e];
    {
        std::vector<int> fill(offset.begin(), offset.end() - 1);
        for (int i = 0; i < T * top_k; ++i) slots[fill[ids[i]]++] = i;
    }
    int most = 0;
    for (int e = 0; e < E; ++e) most = std::max(most, offset[e + 1] - offset[e]);
    std::fill(y, y + size_t(T) * dim, 0.f);
    if (most == 0) return;

    // The activation format depends on an expert's token count (AMX tiles from kAmxMinTokens): room for either.
    auto act_bytes = [&](const StackedWeights& w) {
        return most * std::max(act_row_bytes(act_format(w.type, isa, 1), w.cols), act_row_bytes(act_format(w.type, isa, most), w.cols));
    };
    std::vector<float> xe(size_t(most) * dim), hg(size_t(most) * ffn), hu(size_t(most) * ffn), ye(size_t(most) * dim);
    std::vector<uint8_t> act_in(act_bytes(gate)), act_up(act_bytes(up)), act_down(act_bytes(down));
    const VectorOps& ops = vector_ops(isa);
    SpinBarrier barrier(pool.size());
    pool.run_team([&](int tid) {
        const int nth = pool.size();
        for (int e = 0; e < E; ++e) {
            const int n = offset[e + 1] - offset[e];
            if (n == 0) continue;
            const int* s = &slots[offset[e]];
            const ActFormat fg = act_format(gate.type, isa, n), fu = act_format(up.type, isa, n);
            const ActFormat fd = act_format(down.type, isa, n);
            const auto [t0, t1] = band(n, tid, nth);
            for (int i = t0; i < t1; ++i) std::copy_n(x + size_t(s[i] / top_k) * dim, dim, &xe[size_t(i) * dim]);
            quantize_part_rows(fg, xe.data(), t0, t1, dim, act_in.data(), isa);
            if (fu != fg) quantize_part_rows(fu, xe.data(), t0, t1, dim, act_up.data(), isa);
            barrier.wait();
            const MatmulArgs ga{gate.expert(e), gate.type, ffn, dim, xe.data(), n, hg.data()};
            const MatmulArgs ua{up.expert(e), up.type, ffn, dim, xe.data(), n, hu.data()};
            matmul_part(ga, act_in.data(), isa, tid, nth);
            matmul_part(ua, fu != fg ? act_up.data() : act_in.data(), isa, tid, nth);
            barrier.wait();
            for (int i = t0; i < t1; ++i) ops.silu_mul(&hg[size_t(i) * ffn], &hu[size_t(i) * ffn], ffn);
            quantize_part_rows(fd, hg.data(), t0, t1, ffn, act_down.data(), isa);
            barrier.wait();
            const MatmulArgs da{down.expert(e), down.type, dim, ffn, hg.data(), n, ye.data()};
            matmul_part(da, act_down.data(), isa, tid, nth);
            barrier.wait();
            for (int i = t0; i < t1; ++i) {  // a token meets each expert once: no two threads add to one row
                float* yt = y + size_t(s[i] / top_k) * dim;
                const float w = weights[s[i]];
                const float* src = &ye[size_t(i) * dim];
                for (int j = 0; j < dim; ++j) yt[j] += w * src[j];
            }
        }
    });
}

}  // namespace kt

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

void MoePlan::build(const int32_t* ids, int T, int top_k, const StackedWeights& gate, const StackedWeights& up,
                    const StackedWeights& down, Isa isa) {
    const int dim = gate.cols, ffn = gate.rows, E = gate.n_experts;
    if (up.rows != ffn || up.cols != dim || down.rows != dim || down.cols != ffn || up.n_experts != E || down.n_experts != E)
        throw std::invalid_argument("moe: gate, up and down shapes disagree");
    for (const StackedWeights* w : {&gate, &up, &down}) matmul_act_format(w->type, w->cols);
    offset.assign(E + 1, 0);
    slots.resize(size_t(T) * top_k);
    for (int i = 0; i < T * top_k; ++i) {
        if (ids[i] < 0 || ids[i] >= E) throw std::invalid_argument("moe: expert id out of range");
        ++offset[ids[i] + 1];
    }
    for (int e = 0; e < E; ++e) offset[e + 1] += offset[e];
    std::vector<int> fill(offset.begin(), offset.end() - 1);
    for (int i = 0; i < T * top_k; ++i) slots[fill[ids[i]]++] = i;
    most = 0;
    for (int e = 0; e < E; ++e) most = std::max(most, offset[e + 1] - offset[e]);
    // The activation format depends on an expert's token count (AMX tiles from kAmxMinTokens): room for either.
    auto act_bytes = [&](const StackedWeights& w) {
        return size_t(most) * std::max(act_row_bytes(act_format(w.type, isa, 1), w.cols),
                                       act_row_bytes(act_format(w.type, isa, std::max(most, 1)), w.cols));
    };
    xe.resize(size_t(most) * dim);
    hg.resize(size_t(most) * ffn);
    hu.resize(size_t(most) * ffn);
    ye.resize(size_t(most) * dim);
    act_in.resize(act_bytes(gate));
    act_up.resize(act_bytes(up));
    act_down.resize(act_bytes(down));
}

void moe_team(MoePlan& w, const float* x, int T, const float* weights, int top_k, const StackedWeights& gate,
              const StackedWeights& up, const StackedWeights& down, float* y, Isa isa, int tid, int nth,
              SpinBarrier& barrier) {
    const MoePlan& plan = w;
    const int dim = gate.cols, ffn = gate.rows, E = gate.n_experts;
    const VectorOps& ops = vector_ops(isa);
    {
        const auto [t0, t1] = band(T, tid, nth);
        std::fill(y + size_t(t0) * dim, y + size_t(t1) * dim, 0.f);
    }
    for (int e = 0; e < E; ++e) {
        const int n = plan.offset[e + 1] - plan.offset[e];
        if (n == 0) continue;
        const int* s = &plan.slots[plan.offset[e]];
        const ActFormat fg = act_format(gate.type, isa, n), fu = act_format(up.type, isa, n);
        const ActFormat fd = act_format(down.type, isa, n);
        const auto [t0, t1] = band(n, tid, nth);
        for (int i = t0; i < t1; ++i) std::copy_n(x + size_t(s[i] / top_k) * dim, dim, &w.xe[size_t(i) * dim]);
        quantize_part_rows(fg, w.xe.data(), t0, t1, dim, w.act_in.data(), isa);
        if (fu != fg) quantize_part_rows(fu, w.xe.data(), t0, t1, dim, w.act_up.data(), isa);
        barrier.wait();
        const MatmulArgs ga{gate.expert(e), gate.type, ffn, dim, w.xe.data(), n, w.hg.data()};
        const MatmulArgs ua{up.expert(e), up.type, ffn, dim, w.xe.data(), n, w.hu.data()};
        matmul_part(ga, w.act_in.data(), isa, tid, nth);
        matmul_part(ua, fu != fg ? w.act_up.data() : w.act_in.data(), isa, tid, nth);
        barrier.wait();
        for (int i = t0; i < t1; ++i) ops.silu_mul(&w.hg[size_t(i) * ffn], &w.hu[size_t(i) * ffn], ffn);
        quantize_part_rows(fd, w.hg.data(), t0, t1, ffn, w.act_down.data(), isa);
        barrier.wait();
        const MatmulArgs da{down.expert(e), down.type, dim, ffn, w.hg.data(), n, w.ye.data()};
        matmul_part(da, w.act_down.data(), isa, tid, nth);
        barrier.wait();
        for (int i = t0; i < t1; ++i) {  // a token meets each expert once: no two threads add to one row
            float* yt = y + size_t(s[i] / top_k) * dim;
            const float wt = weights[s[i]];
            const float* src = &w.ye[size_t(i) * dim];
            for (int j = 0; j < dim; ++j) yt[j] += wt * src[j];
        }
    }
    barrier.wait();
}

void moe_forward(const float* x, int T, const int32_t* ids, const float* weights, int top_k,
                 const StackedWeights& gate, const StackedWeights& up, const StackedWeights& down,
                 float* y, Isa isa, ThreadPool& pool) {
    MoePlan plan;
    plan.build(ids, T, top_k, gate, up, down, isa);
    SpinBarrier barrier(pool.size());
    pool.run_team([&](int tid) { moe_team(plan, x, T, weights, top_k, gate, up, down, y, isa, tid, pool.size(), barrier); });
}

}  // namespace kt

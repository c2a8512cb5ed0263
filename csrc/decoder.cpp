#include "decoder.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace kt {

const VectorOps& vector_ops(Isa isa) {
    switch (isa) {
        case Isa::amx:
        case Isa::avx512: return vector_ops_avx512();
        case Isa::avx2: return vector_ops_avx2();
        default: return vector_ops_scalar();
    }
}

const float* gelu_f16_table() {
    static const std::vector<float> table = [] {
        std::vector<float> t(1 << 16);
        for (int i = 0; i < (1 << 16); ++i) {
            const float x = fp16_to_f32(uint16_t(i));
            t[i] = float(_Float16(0.5f * x * (1.0f + std::tanh(0.7978845608f * x * (1.0f + 0.044715f * x * x)))));
        }
        return t;
    }();
    return table.data();
}

void KVSequence::set_length(int n) {
    if (n < 0 || n > length_) throw std::invalid_argument("KVSequence: length can only shrink");
    length_ = n;
}

void KVSequence::reserve(int tokens) {
    constexpr int kSpare = 16;  // one whole key tile past the last key
    if (tokens + kSpare <= capacity_) return;
    const int capacity = (std::max(tokens + kSpare, capacity_ + capacity_ / 2 + 256) + 15) / 16 * 16;  // amortised growth
    for (auto& layer : v_) layer.resize(size_t(capacity) * row());
    for (auto& layer : k_) {  // each (head, dimension) row of keys moves to its new stride
        std::vector<uint16_t> grown(size_t(capacity) * row());
        for (int r = 0; capacity_ && r < row(); ++r)
            std::copy_n(layer.data() + size_t(r) * capacity_, length_, grown.data() + size_t(r) * capacity);
        layer.swap(grown);
    }
    capacity_ = capacity;
}

namespace {

// [begin, end) of n items for thread tid of nth.
inline std::pair<int, int> band(int n, int tid, int nth) {
    return {int(int64_t(n) * tid / nth), int(int64_t(n) * (tid + 1) / nth)};
}

// Softmax over n scores (in place), then the k most probable with their weights renormalised.
void route_softmax_topk(float* p, int n, int k, int32_t* ids, float* weights) {
    const float mx = *std::max_element(p, p + n);
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += (p[i] = std::exp(p[i] - mx));
    for (int i = 0; i < n; ++i) p[i] = float(p[i] / sum);
    double kept = 0;
    for (int j = 0; j < k; ++j) {  // the first of equal scores wins, as torch.topk
        int best = -1;
        for (int i = 0; i < n; ++i)
            if ((best < 0 || p[i] > p[best]) && std::find(ids, ids + j, i) == ids + j) best = i;
        ids[j] = best;
        kept += (weights[j] = p[best]);
    }
    for (int j = 0; j < k; ++j) weights[j] = float(weights[j] / kept);
}

void check_weight(const WeightRef& w, int rows, int cols, const char* what) {
    if (!w.data || w.rows != rows || w.cols != cols)
        throw std::invalid_argument(std::string("DenseDecoder: ") + what + " has the wrong shape");
    matmul_act_format(w.type, cols);  // throws for an unsupported type or block misfit
}

}  // namespace

// Activations of one forward, sized for its token count.
struct DenseDecoder::Buffers {
    int T = 0;
    std::vector<float> x, h, q, k, v, attn, proj, gate, up, out_h;
    std::vector<int> pos;             // position of each token in its sequence
    std::vector<int> chunk_of;        // chunk index of each token
    std::vector<int> chunk_start;     // first token of each chunk
    std::vector<std::vector<float>> cos, sin;  // per rope: [T, dim/2]
    std::vector<uint8_t> act[4];      // x quantized for the next matmul, per ActFormat
    struct Item { int chunk, kv_head, h0, h1, t0, t1; };  // heads [h0, h1) of the key/value head's group
    std::vector<Item> items;          // attention work: token ranges of one chunk and key/value head
    std::unique_ptr<std::atomic<int>[]> next_item;  // per layer: the next item to take
    std::vector<float> router;        // [T, n_experts] router scores, then probabilities
    std::vector<int32_t> topk_ids;    // [T, top_k]
    std::vector<float> topk_weights;
    MoePlan moe;
    std::unique_ptr<SpinBarrier> barrier;
    std::vector<AttentionScratch> scratch;  // per thread
};

DenseDecoder::DenseDecoder(DecoderConfig config, std::vector<DecoderLayer> layers, const float* final_norm,
                           WeightRef lm_head)
    : c_(std::move(config)), layers_(std::move(layers)), final_norm_(final_norm), lm_head_(lm_head),
      buffers_(std::make_unique<Buffers>()) {
    const int qd = c_.n_heads * c_.head_dim, kvd = c_.n_kv_heads * c_.head_dim;
    if (c_.n_kv_heads <= 0 || c_.n_heads % c_.n_kv_heads != 0)
        throw std::invalid_argument("DenseDecoder: n_heads must be a multiple of n_kv_heads");
    if (c_.head_dim % 16 != 0 || c_.head_dim > 512)
        throw std::invalid_argument("DenseDecoder: head_dim must be a multiple of 16, at most 512");
    for (const RopeSpec& r : c_.ropes)
        if (r.dim <= 0 || r.dim > c_.head_dim || r.dim % 2) throw std::invalid_argument("DenseDecoder: bad rope dim");
    for (const DecoderLayer& l : layers_) {
        check_weight(l.q, qd, c_.dim, "attn_q");
        check_weight(l.k, kvd, c_.dim, "attn_k");
        check_weight(l.v, kvd, c_.dim, "attn_v");
        check_weight(l.o, c_.dim, qd, "attn_output");
        if (l.top_k > 0) {
            check_weight(l.router, l.gate_exps.n_experts, c_.dim, "ffn_gate_inp");
            if (l.top_k > l.gate_exps.n_experts || l.gate_exps.cols != c_.dim)
                throw std::invalid_argument("DenseDecoder: experts do not fit the model");
            MoePlan{}.build(nullptr, 0, l.top_k, l.gate_exps, l.up_exps, l.down_exps, Isa::scalar);  // shape checks
        } else {
            check_weight(l.gate, c_.ffn_dim, c_.dim, "ffn_gate");
            check_weight(l.up, c_.ffn_dim, c_.dim, "ffn_up");
            check_weight(l.down, c_.dim, c_.ffn_dim, "ffn_down");
        }
        if (!l.attn_norm || !l.ffn_norm) throw std::invalid_argument("DenseDecoder: a layer lacks its norms");
        if (l.rope < 0 || l.rope >= int(c_.ropes.size())) throw std::invalid_argument("DenseDecoder: bad rope index");
    }
    check_weight(lm_head_, c_.vocab, c_.dim, "output");
}

DenseDecoder::~DenseDecoder() = default;

void DenseDecoder::forward(const float* embeddings, const std::vector<SequenceChunk>& chunks,
                           const std::vector<int>& out_rows, float* logits, Isa isa, ThreadPool& pool) {
    std::lock_guard<std::mutex> lock(mu_);
    Buffers& b = *buffers_;
    int T = 0;
    for (const SequenceChunk& ch : chunks) {
        if (ch.n_tokens <= 0 || ch.seq->row() != c_.n_kv_heads * c_.head_dim)
            throw std::invalid_argument("DenseDecoder.forward: empty chunk or a sequence of another model");
        T += ch.n_tokens;
    }
    for (int r : out_rows)
        if (r < 0 || r >= T) throw std::invalid_argument("DenseDecoder.forward: output row out of range");
    const int nth = pool.size(), qd = c_.n_heads * c_.head_dim, kvd = c_.n_kv_heads * c_.head_dim;

    b.T = T;
    b.x.assign(embeddings, embeddings + size_t(T) * c_.dim);
    for (float& v : b.x) v *= c_.embed_scale;
    b.h.resize(size_t(T) * c_.dim);
    b.q.resize(size_t(T) * qd);
    b.k.resize(size_t(T) * kvd);
    b.v.resize(size_t(T) * kvd);
    b.attn.resize(size_t(T) * qd);
    b.proj.resize(size_t(T) * c_.dim);
    b.gate.resize(size_t(T) * c_.ffn_dim);
    b.up.resize(size_t(T) * c_.ffn_dim);
    b.out_h.resize(out_rows.size() * size_t(c_.dim));
    int most_experts = 0, most_k = 0;
    for (const DecoderLayer& l : layers_)
        if (l.top_k > 0) most_experts = std::max(most_experts, l.gate_exps.n_experts), most_k = std::max(most_k, l.top_k);
    b.router.resize(size_t(T) * most_experts);
    b.topk_ids.resize(size_t(T) * most_k);
    b.topk_weights.resize(size_t(T) * most_k);
    const int widest = std::max({c_.dim, qd, c_.ffn_dim});
    for (ActFormat f : {ActFormat::a32, ActFormat::aK, ActFormat::bf16})
        b.act[int(f)].resize(act_row_bytes(f, widest - widest % 256 + 256) * std::max<size_t>(T, 1));

    // Positions, rope tables (angles in double, as kt's torch reference), attention work items.
    b.pos.resize(T);
    b.chunk_of.resize(T);
    b.chunk_start.clear();
    b.items.clear();
    const int min_tokens_per_item = 16;
    for (int c = 0, t = 0; c < int(chunks.size()); ++c) {
        KVSequence& seq = *chunks[c].seq;
        const int n = chunks[c].n_tokens;
        seq.reserve(seq.length() + n);
        b.chunk_start.push_back(t);
        for (int i = 0; i < n; ++i, ++t) b.pos[t] = seq.length() + i, b.chunk_of[t] = c;
        const int per_item = std::max(min_tokens_per_item, (n + 4 * nth - 1) / (4 * nth));
        // A short chunk (decode) has too few token ranges to share: split each group's query heads too.
        const int G = c_.n_heads / c_.n_kv_heads, parts = n < min_tokens_per_item ? std::min(G, nth) : 1;
        for (int g = 0; g < c_.n_kv_heads; ++g)
            for (int p = 0; p < parts; ++p)
                for (int t0 = 0; t0 < n; t0 += per_item)
                    b.items.push_back({c, g, G * p / parts, G * (p + 1) / parts, t0, std::min(n, t0 + per_item)});
    }
    // Longest items (latest tokens see the most keys) first, for balance.
    std::stable_sort(b.items.begin(), b.items.end(), [](const auto& x, const auto& y) { return x.t0 > y.t0; });
    b.cos.resize(c_.ropes.size());
    b.sin.resize(c_.ropes.size());
    for (size_t r = 0; r < c_.ropes.size(); ++r) {
        const RopeSpec& rs = c_.ropes[r];
        const int half = rs.dim / 2;
        b.cos[r].resize(size_t(T) * half);
        b.sin[r].resize(size_t(T) * half);
        for (int i = 0; i < half; ++i) {
            const double inv_freq = std::pow(rs.base, -double(2 * i) / rs.dim);
            for (int t = 0; t < T; ++t) {
                const double angle = double(b.pos[t]) * rs.scale * inv_freq;
                b.cos[r][size_t(t) * half + i] = float(std::cos(angle));
                b.sin[r][size_t(t) * half + i] = float(std::sin(angle));
            }
        }
    }
    b.next_item.reset(new std::atomic<int>[layers_.size()]);
    for (size_t l = 0; l < layers_.size(); ++l) b.next_item[l].store(0);
    if (!b.barrier || int(b.scratch.size()) != nth) {
        b.barrier = std::make_unique<SpinBarrier>(nth);
        b.scratch.resize(nth);
    }

    pool.run_team([&](int tid) { run_thread(b, chunks, out_rows, logits, isa, tid, nth); });
    for (const SequenceChunk& ch : chunks) ch.seq->advance(ch.n_tokens);
}

void DenseDecoder::run_thread(Buffers& b, const std::vector<SequenceChunk>& chunks, const std::vector<int>& out_rows,
                              float* logits, Isa isa, int tid, int nth) {
    const VectorOps& ops = vector_ops(isa);
    const int T = b.T, D = c_.head_dim, H = c_.n_heads, Hkv = c_.n_kv_heads, G = H / Hkv;
    const int qd = H * D, kvd = Hkv * D, dim = c_.dim, ffn = c_.ffn_dim;
    std::vector<uint16_t> k16(kvd);  // one token's keys in f16, before they are spread over the transposed cache
    const auto [t0, t1] = band(T, tid, nth);
    SpinBarrier& barrier = *b.barrier;

    // Quantize rows [t0, t1) of x [., cols] for every format that the weights about to read it want.
    auto quantize_for = [&](const float* x, int cols, std::initializer_list<const WeightRef*> weights) {
        bool done[4] = {};
        for (const WeightRef* w : weights) {
            const ActFormat f = act_format(w->type, isa, T);
            if (f == ActFormat::f32 || done[int(f)]) continue;
            done[int(f)] = true;
            const size_t row = act_row_bytes(f, cols);
            for (int t = t0; t < t1; ++t) quantize_row(f, x + size_t(t) * cols, b.act[int(f)].data() + row * t, cols, isa);
        }
    };
    auto mm = [&](const WeightRef& w, const float* x, float* y, int rows_T) {
        const MatmulArgs a{w.data, w.type, w.rows, w.cols, x, rows_T, y};
        matmul_part(a, b.act[int(act_format(w.type, isa, rows_T))].data(), isa, tid, nth);
    };
    auto rope = [&](float* head, int t, int r) {
        const RopeSpec& rs = c_.ropes[r];
        const int half = rs.dim / 2;
        const float* cs = b.cos[r].data() + size_t(t) * half;
        const float* sn = b.sin[r].data() + size_t(t) * half;
        for (int i = 0; i < half; ++i) {
            float& x0 = rs.neox ? head[i] : head[2 * i];
            float& x1 = rs.neox ? head[i + half] : head[2 * i + 1];
            const float a = x0, c = x1;
            x0 = a * cs[i] - c * sn[i];
            x1 = a * sn[i] + c * cs[i];
        }
    };

    for (int t = t0; t < t1; ++t) ops.rms_norm(&b.x[size_t(t) * dim], layers_[0].attn_norm, &b.h[size_t(t) * dim], dim, c_.norm_eps);
    for (size_t li = 0; li < layers_.size(); ++li) {
        const DecoderLayer& L = layers_[li];
        quantize_for(b.h.data(), dim, {&L.q, &L.k, &L.v});
        barrier.wait();
        mm(L.q, b.h.data(), b.q.data(), T);
        mm(L.k, b.h.data(), b.k.data(), T);
        mm(L.v, b.h.data(), b.v.data(), T);
        barrier.wait();
        // q/k norms, rope, and this step's keys and values into the cache (f16).
        for (int t = t0; t < t1; ++t) {
            for (int h = 0; h < H; ++h) {
                float* qh = &b.q[size_t(t) * qd + size_t(h) * D];
                if (L.q_norm) ops.rms_norm(qh, L.q_norm, qh, D, c_.norm_eps);
                rope(qh, t, L.rope);
            }
            for (int h = 0; h < Hkv; ++h) {
                float* kh = &b.k[size_t(t) * kvd + size_t(h) * D];
                if (L.k_norm) ops.rms_norm(kh, L.k_norm, kh, D, c_.norm_eps);
                rope(kh, t, L.rope);
            }
            KVSequence& seq = *chunks[b.chunk_of[t]].seq;
            ops.to_f16(&b.k[size_t(t) * kvd], k16.data(), kvd);
            uint16_t* kt = seq.kt(int(li)) + b.pos[t];
            for (int i = 0; i < kvd; ++i) kt[size_t(i) * seq.capacity()] = k16[i];
            ops.to_f16(&b.v[size_t(t) * kvd], seq.v(int(li)) + size_t(b.pos[t]) * kvd, kvd);
        }
        barrier.wait();
        for (int i; (i = b.next_item[li].fetch_add(1)) < int(b.items.size());) {
            const auto& it = b.items[i];
            const int first = b.chunk_start[it.chunk] + it.t0;
            KVSequence& seq = *chunks[it.chunk].seq;
            const size_t head0 = size_t(it.kv_head * G + it.h0) * D;
            AttentionRows a{&b.q[size_t(first) * qd + head0], qd, it.h1 - it.h0, &b.pos[first], it.t1 - it.t0,
                            seq.kt(int(li)) + size_t(it.kv_head) * D * seq.capacity(), seq.capacity(),
                            seq.v(int(li)) + size_t(it.kv_head) * D, kvd, D,
                            c_.attn_scale, L.window, &b.attn[size_t(first) * qd + head0], qd};
            ops.attend(a, b.scratch[tid]);
        }
        barrier.wait();
        quantize_for(b.attn.data(), qd, {&L.o});
        barrier.wait();
        mm(L.o, b.attn.data(), b.proj.data(), T);
        barrier.wait();
        for (int t = t0; t < t1; ++t) {
            float* p = &b.proj[size_t(t) * dim];
            if (L.post_attn_norm) ops.rms_norm(p, L.post_attn_norm, p, dim, c_.norm_eps);
            float* x = &b.x[size_t(t) * dim];
            for (int i = 0; i < dim; ++i) x[i] += p[i];
            ops.rms_norm(x, L.ffn_norm, &b.h[size_t(t) * dim], dim, c_.norm_eps);
        }
        if (L.top_k > 0) {
            const int E = L.gate_exps.n_experts, k = L.top_k;
            quantize_for(b.h.data(), dim, {&L.router});
            barrier.wait();
            mm(L.router, b.h.data(), b.router.data(), T);
            barrier.wait();
            for (int t = t0; t < t1; ++t) route_softmax_topk(&b.router[size_t(t) * E], E, k, &b.topk_ids[size_t(t) * k],
                                                             &b.topk_weights[size_t(t) * k]);
            barrier.wait();
            if (tid == 0) b.moe.build(b.topk_ids.data(), T, k, L.gate_exps, L.up_exps, L.down_exps, isa);
            barrier.wait();
            moe_team(b.moe, b.h.data(), T, b.topk_weights.data(), k, L.gate_exps, L.up_exps, L.down_exps, b.proj.data(),
                     isa, tid, nth, barrier);
        } else {
            quantize_for(b.h.data(), dim, {&L.gate, &L.up});
            barrier.wait();
            mm(L.gate, b.h.data(), b.gate.data(), T);
            mm(L.up, b.h.data(), b.up.data(), T);
            barrier.wait();
            for (int t = t0; t < t1; ++t) {
                float* g = &b.gate[size_t(t) * ffn];
                const float* u = &b.up[size_t(t) * ffn];
                if (c_.act == Activation::silu) ops.silu_mul(g, u, ffn);
                else ops.gelu_mul(g, u, ffn, gelu_f16_table());
            }
            quantize_for(b.gate.data(), ffn, {&L.down});
            barrier.wait();
            mm(L.down, b.gate.data(), b.proj.data(), T);
            barrier.wait();
        }
        const float* next_norm = li + 1 < layers_.size() ? layers_[li + 1].attn_norm : nullptr;
        for (int t = t0; t < t1; ++t) {
            float* p = &b.proj[size_t(t) * dim];
            if (L.post_ffn_norm) ops.rms_norm(p, L.post_ffn_norm, p, dim, c_.norm_eps);
            float* x = &b.x[size_t(t) * dim];
            for (int i = 0; i < dim; ++i) x[i] += p[i];
            if (next_norm) ops.rms_norm(x, next_norm, &b.h[size_t(t) * dim], dim, c_.norm_eps);
        }
    }
    // Final norm and the output head, for the rows that want logits.
    const int n_out = int(out_rows.size());
    const auto [o0, o1] = band(n_out, tid, nth);
    barrier.wait();
    for (int i = o0; i < o1; ++i) ops.rms_norm(&b.x[size_t(out_rows[i]) * dim], final_norm_, &b.out_h[size_t(i) * dim], dim, c_.norm_eps);
    barrier.wait();
    const ActFormat head_format = act_format(lm_head_.type, isa, n_out);
    quantize_part(head_format, b.out_h.data(), n_out, dim, b.act[int(head_format)].data(), isa, tid, nth);
    barrier.wait();
    const MatmulArgs a{lm_head_.data, lm_head_.type, lm_head_.rows, lm_head_.cols, b.out_h.data(), n_out, logits};
    matmul_part(a, b.act[int(head_format)].data(), isa, tid, nth);
}

}  // namespace kt

// kt._kernels: y = x @ W^T on GGUF blocks, read in place from numpy.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "decoder.h"
#include "moe.h"
#include "matmul.h"

namespace nb = nanobind;
using namespace kt;

namespace {

using Blocks = nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using CMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Matrix = nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

struct State {
    std::mutex mu;  // guards the pool pointer while it is swapped
    std::shared_ptr<ThreadPool> pool = std::make_shared<ThreadPool>(default_thread_count());
    Isa isa = best_isa();
};
State& state() {
    static State* s = new State();  // never destroyed: workers must not be joined at interpreter exit
    return *s;
}

void set_isa(const std::string& name) {
    Isa isa;
    if (name.empty()) isa = best_isa();
    else if (!parse_isa(name, &isa))
        throw nb::value_error(("unknown ISA '" + name + "': expected one of scalar, avx2, avx512, amx").c_str());
    else if (!isa_supported(isa))
        throw nb::value_error(("ISA '" + name + "' is not supported by this CPU").c_str());
    state().isa = isa;
}

void set_threads(int n) {
    if (n < 1) throw nb::value_error("set_threads: n must be >= 1");
    auto pool = std::make_shared<ThreadPool>(n);
    std::lock_guard<std::mutex> lock(state().mu);
    state().pool = pool;  // the old pool finishes any call in flight, then dies with its last user
}

std::shared_ptr<ThreadPool> current_pool() {
    std::lock_guard<std::mutex> lock(state().mu);
    return state().pool;
}

void py_matmul(Blocks raw, int ggml_type, int rows, int cols, CMatrix x, Matrix y) {
    const QuantTraits& tr = quant_traits(ggml_type);
    if (tr.block_size == 0) throw nb::value_error(("unsupported ggml type " + std::to_string(ggml_type)).c_str());
    if (rows < 0 || cols <= 0 || cols % tr.block_size != 0)
        throw nb::value_error("cols must be a positive multiple of the format's block size");
    const size_t row_bytes = size_t(cols / tr.block_size) * tr.type_size;
    if (raw.shape(0) != size_t(rows) || raw.shape(1) != row_bytes)
        throw nb::value_error(("raw must be [rows, " + std::to_string(row_bytes) + "] bytes").c_str());
    if (x.shape(1) != size_t(cols)) throw nb::value_error("x must be [T, cols]");
    if (y.shape(0) != x.shape(0) || y.shape(1) != size_t(rows)) throw nb::value_error("y must be [T, rows]");
    MatmulArgs args{raw.data(), ggml_type, rows, cols, x.data(), int(x.shape(0)), y.data()};
    std::shared_ptr<ThreadPool> pool = current_pool();
    nb::gil_scoped_release release;
    matmul(args, state().isa, *pool);
}

using Vector = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

StackedWeights stacked(Blocks raw, int type, int n_experts, int rows, int cols, const char* what) {
    const QuantTraits& tr = quant_traits(type);
    if (tr.block_size == 0 || cols <= 0 || cols % tr.block_size != 0 || n_experts <= 0 || rows <= 0)
        throw nb::value_error((std::string(what) + ": unsupported type or shape").c_str());
    StackedWeights w{raw.data(), type, n_experts, rows, cols};
    if (raw.shape(0) != size_t(n_experts) * rows || raw.shape(1) != w.row_bytes())
        throw nb::value_error((std::string(what) + ": blocks must be [n_experts * rows, row_bytes]").c_str());
    return w;
}

StackedWeights stacked(nb::handle obj, const char* what) {  // (raw, type, n_experts, rows, cols)
    nb::tuple t = nb::cast<nb::tuple>(obj);
    return stacked(nb::cast<Blocks>(t[0]), nb::cast<int>(t[1]), nb::cast<int>(t[2]), nb::cast<int>(t[3]),
                   nb::cast<int>(t[4]), what);
}


// A DenseDecoder and the Python objects whose memory it reads (weights, norms).
struct PyDecoder {
    std::unique_ptr<DenseDecoder> decoder;
    std::vector<nb::object> keep_alive;

    const float* vec(nb::handle obj, int size, const char* what) {
        if (obj.is_none()) return nullptr;
        Vector v = nb::cast<Vector>(obj);
        if (int(v.shape(0)) != size) throw nb::value_error((std::string(what) + " has the wrong length").c_str());
        keep_alive.emplace_back(nb::borrow(obj));
        return v.data();
    }
    StackedWeights experts(nb::handle obj, const char* what) {
        keep_alive.emplace_back(nb::borrow(nb::cast<nb::tuple>(obj)[0]));
        return stacked(obj, what);
    }
    WeightRef weight(nb::handle obj) {  // (raw [rows, row_bytes] uint8, ggml_type, rows, cols)
        nb::tuple t = nb::cast<nb::tuple>(obj);
        Blocks raw = nb::cast<Blocks>(t[0]);
        WeightRef w{raw.data(), nb::cast<int>(t[1]), nb::cast<int>(t[2]), nb::cast<int>(t[3])};
        const QuantTraits& tr = quant_traits(w.type);
        if (tr.block_size == 0 || w.cols % tr.block_size != 0 || raw.shape(0) != size_t(w.rows) ||
            raw.shape(1) != size_t(w.cols / tr.block_size) * tr.type_size)
            throw nb::value_error("weight blocks do not match their type and shape");
        keep_alive.emplace_back(nb::borrow(t[0]));
        return w;
    }
};

PyDecoder* make_decoder(nb::dict cfg, nb::list layers, nb::handle final_norm, nb::handle lm_head) {
    auto py = std::make_unique<PyDecoder>();
    DecoderConfig c;
    c.dim = nb::cast<int>(cfg["dim"]);
    c.n_heads = nb::cast<int>(cfg["n_heads"]);
    c.n_kv_heads = nb::cast<int>(cfg["n_kv_heads"]);
    c.head_dim = nb::cast<int>(cfg["head_dim"]);
    c.ffn_dim = nb::cast<int>(cfg["ffn_dim"]);
    c.vocab = nb::cast<int>(cfg["vocab"]);
    c.norm_eps = nb::cast<float>(cfg["norm_eps"]);
    c.attn_scale = nb::cast<float>(cfg["attn_scale"]);
    c.embed_scale = nb::cast<float>(cfg["embed_scale"]);
    const std::string act = nb::cast<std::string>(cfg["activation"]);
    if (act != "silu" && act != "gelu_tanh") throw nb::value_error(("unknown activation " + act).c_str());
    c.act = act == "silu" ? Activation::silu : Activation::gelu_tanh;
    for (nb::handle r : nb::cast<nb::list>(cfg["ropes"])) {
        nb::dict d = nb::cast<nb::dict>(r);
        c.ropes.push_back({nb::cast<int>(d["dim"]), nb::cast<double>(d["base"]), nb::cast<double>(d["scale"]),
                           nb::cast<bool>(d["neox"])});
    }
    const int D = c.head_dim;
    std::vector<DecoderLayer> ls;
    for (nb::handle h : layers) {
        nb::dict d = nb::cast<nb::dict>(h);
        auto opt = [&](const char* key) { return d.contains(key) ? nb::handle(d[key]) : nb::handle(nb::none()); };
        DecoderLayer l;
        l.attn_norm = py->vec(d["attn_norm"], c.dim, "attn_norm");
        l.q = py->weight(d["q"]); l.k = py->weight(d["k"]); l.v = py->weight(d["v"]); l.o = py->weight(d["o"]);
        l.q_norm = py->vec(opt("q_norm"), D, "q_norm");
        l.k_norm = py->vec(opt("k_norm"), D, "k_norm");
        l.post_attn_norm = py->vec(opt("post_attn_norm"), c.dim, "post_attn_norm");
        l.ffn_norm = py->vec(d["ffn_norm"], c.dim, "ffn_norm");
        if (!d.contains("top_k")) { l.gate = py->weight(d["gate"]); l.up = py->weight(d["up"]); l.down = py->weight(d["down"]); }
        l.post_ffn_norm = py->vec(opt("post_ffn_norm"), c.dim, "post_ffn_norm");
        if (d.contains("top_k")) {  // a mixture-of-experts MLP
            l.top_k = nb::cast<int>(d["top_k"]);
            l.router = py->weight(d["router"]);
            l.gate_exps = py->experts(d["gate_exps"], "gate_exps");
            l.up_exps = py->experts(d["up_exps"], "up_exps");
            l.down_exps = py->experts(d["down_exps"], "down_exps");
        }
        l.rope = nb::cast<int>(d["rope"]);
        l.window = nb::cast<int>(d["window"]);
        ls.push_back(l);
    }
    const float* fn = py->vec(final_norm, c.dim, "final_norm");
    WeightRef head = py->weight(lm_head);
    try {
        py->decoder = std::make_unique<DenseDecoder>(std::move(c), std::move(ls), fn, head);
    } catch (const std::invalid_argument& e) {
        throw nb::value_error(e.what());
    }
    return py.release();
}

void decoder_forward(PyDecoder& py, CMatrix embeddings, std::vector<KVSequence*> seqs, std::vector<int> counts,
                     std::vector<int> out_rows, Matrix logits) {
    DenseDecoder& d = *py.decoder;
    if (seqs.size() != counts.size() || seqs.empty()) throw nb::value_error("one token count per sequence");
    std::vector<SequenceChunk> chunks;
    size_t T = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        if (counts[i] <= 0) throw nb::value_error("token counts must be positive");
        chunks.push_back({seqs[i], counts[i]});
        T += size_t(counts[i]);
    }
    if (embeddings.shape(0) != T || embeddings.shape(1) != size_t(d.config().dim))
        throw nb::value_error("embeddings must be [total tokens, dim]");
    if (logits.shape(0) != out_rows.size() || logits.shape(1) != size_t(d.config().vocab))
        throw nb::value_error("logits must be [len(out_rows), vocab]");
    std::shared_ptr<ThreadPool> pool = current_pool();
    nb::gil_scoped_release release;
    try {
        d.forward(embeddings.data(), chunks, out_rows, logits.data(), state().isa, *pool);
    } catch (const std::invalid_argument& e) {
        nb::gil_scoped_acquire acquire;
        throw nb::value_error(e.what());
    }
}

using IdMatrix = nb::ndarray<const int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

void py_moe(CMatrix x, IdMatrix ids, CMatrix weights, nb::tuple gate, nb::tuple up, nb::tuple down, Matrix y) {
    const StackedWeights g = stacked(gate, "gate"), u = stacked(up, "up"), d = stacked(down, "down");
    const size_t T = x.shape(0);
    if (x.shape(1) != size_t(g.cols) || ids.shape(0) != T || weights.shape(0) != T || ids.shape(1) != weights.shape(1))
        throw nb::value_error("moe: x [T, dim], ids and weights [T, top_k] expected");
    if (y.shape(0) != T || y.shape(1) != size_t(g.cols)) throw nb::value_error("moe: y must be [T, dim]");
    std::shared_ptr<ThreadPool> pool = current_pool();
    nb::gil_scoped_release release;
    try {
        moe_forward(x.data(), int(T), ids.data(), weights.data(), int(ids.shape(1)), g, u, d, y.data(), state().isa, *pool);
    } catch (const std::invalid_argument& e) {
        nb::gil_scoped_acquire acquire;
        throw nb::value_error(e.what());
    }
}

nb::dict py_cpu_features() {
    const CpuFeatures& f = cpu_features();
    nb::dict d;
    d["avx2"] = f.avx2; d["fma"] = f.fma; d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f; d["avx512bw"] = f.avx512bw; d["avx512vl"] = f.avx512vl;
    d["avx512vnni"] = f.avx512vnni; d["avx512bf16"] = f.avx512bf16;
    d["amx_tile"] = f.amx_tile; d["amx_int8"] = f.amx_int8; d["amx_bf16"] = f.amx_bf16;
    d["amx_permitted"] = f.amx_permitted;
    return d;
}

}  // namespace

NB_MODULE(_kernels, m) {
    m.doc() = "GGUF block matmul kernels (scalar, AVX2, AVX-512 VNNI) with a thread pool.";
    m.def("matmul", &py_matmul, nb::arg("raw"), nb::arg("ggml_type"), nb::arg("rows"), nb::arg("cols"),
          nb::arg("x"), nb::arg("y"), "y[T, rows] = x[T, cols] @ W^T, W the GGUF blocks in raw.");
    m.def("moe", &py_moe, nb::arg("x"), nb::arg("ids"), nb::arg("weights"), nb::arg("gate"), nb::arg("up"),
          nb::arg("down"), nb::arg("y"), "Routed experts of one MoE layer: y = sum_k w * down(silu(gate(x)) * up(x)).");
    m.def("set_isa", &set_isa, nb::arg("name"), "Force an ISA (scalar, avx2, avx512, amx); '' for the best one.");
    m.def("isa", [] { return std::string(isa_name(state().isa)); });
    m.def("supported_isas", [] {
        nb::list out;
        for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::amx})
            if (isa_supported(isa)) out.append(isa_name(isa));
        return out;
    });
    m.def("cpu_features", &py_cpu_features);
    m.def("set_threads", &set_threads, nb::arg("n"));
    m.def("num_threads", [] { std::lock_guard<std::mutex> l(state().mu); return state().pool->size(); });
    m.def("default_threads", &default_thread_count);
    m.def("supported_types", [] {
        nb::list out;
        for (int t = 0; t < GGML_TYPE_COUNT; ++t)
            if (quant_traits(t).block_size) out.append(t);
        return out;
    });
    nb::class_<KVSequence>(m, "KVSequence", "One sequence's f16 keys and values, per layer.")
        .def("__init__", [](KVSequence* self, PyDecoder& d) {
            new (self) KVSequence(d.decoder->n_layers(), d.decoder->config().n_kv_heads, d.decoder->config().head_dim);
        }, nb::arg("decoder"))
        .def_prop_ro("length", &KVSequence::length)
        .def_prop_ro("capacity", &KVSequence::capacity)
        .def("truncate", [](KVSequence& s, int n) {
            try { s.set_length(n); } catch (const std::invalid_argument& e) { throw nb::value_error(e.what()); }
        }, nb::arg("length"));
    nb::class_<PyDecoder>(m, "DenseDecoder", "Fused forward of a dense decoder over GGUF blocks.")
        .def(nb::new_(&make_decoder), nb::arg("config"), nb::arg("layers"), nb::arg("final_norm"), nb::arg("lm_head"))
        .def("forward", &decoder_forward, nb::arg("embeddings"), nb::arg("sequences"), nb::arg("counts"),
             nb::arg("out_rows"), nb::arg("logits"));
    const char* env = std::getenv("KT_ISA");
    set_isa(env ? env : "");
}

// kt._kernels: y = x @ W^T on GGUF blocks, read in place from numpy.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

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
        throw nb::value_error(("unknown ISA '" + name + "': expected one of scalar, avx2, avx512").c_str());
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
    std::shared_ptr<ThreadPool> pool;
    {
        std::lock_guard<std::mutex> lock(state().mu);
        pool = state().pool;
    }
    nb::gil_scoped_release release;
    matmul(args, state().isa, *pool);
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
    m.def("set_isa", &set_isa, nb::arg("name"), "Force an ISA (scalar, avx2, avx512); '' for the best one.");
    m.def("isa", [] { return std::string(isa_name(state().isa)); });
    m.def("supported_isas", [] {
        nb::list out;
        for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
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
    const char* env = std::getenv("KT_ISA");
    set_isa(env ? env : "");
}

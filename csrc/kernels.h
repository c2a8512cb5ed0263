// The contract between the ISA files and the matmul driver.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include "ggml_blocks.h"

namespace kt {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, amx = 3 };  // amx: AVX-512 plus AMX tiles for batches
enum class ActFormat : int { f32, a32, aK, bf16 };

// dot(w_row, a_row) over `nblocks` weight blocks; a_row is in the activation
// format the weight type names in its traits (for float formats nblocks = cols).
using DotFn = float (*)(int nblocks, const void* w, const void* a);

struct QuantTraits {
    int block_size = 0;    // values per weight block (1 for float formats)
    int type_size = 0;     // bytes per weight block
    ActFormat act = ActFormat::f32;
};

// y[t * y_stride + r] for weight rows r < n_rows and tokens t < n_tok, both at most kTileSize:
// a register-blocked tile for batches of tokens, each weight and activation block loaded once.
constexpr int kTileSize = 4;
using TileFn = void (*)(int nblocks, const uint8_t* w, size_t w_row_bytes, int n_rows,
                        const uint8_t* a, size_t a_row_bytes, int n_tok, float* y, size_t y_stride);

// Activations of one row into their blocks (n values; a multiple of the block size).
using QuantizeFn = void (*)(const float* x, void* blocks, int n);

// One DotFn (and optionally a TileFn) per ggml type, nullptr where the ISA has no kernel for
// it; the activation quantizers per ActFormat, nullptr for the scalar ones.
struct DotTable {
    DotFn dot[GGML_TYPE_COUNT] = {};
    TileFn tile[GGML_TYPE_COUNT] = {};
    QuantizeFn quantize[4] = {};
};

const QuantTraits& quant_traits(int ggml_type);  // block_size == 0: unsupported

const DotTable& dots_scalar();
const DotTable& dots_avx2();
const DotTable& dots_avx512();

// AMX (quants_amx.cpp): y[T, rows] rows [r0, r1) (multiples of 16 but r1 may be rows) from
// bf16 activations x [T, cols]; the types it handles; f32 -> bf16 rows for it.
constexpr int kAmxMinTokens = 16;  // fewer tokens than a tile: the AVX-512 dots are faster
bool amx_supports(int ggml_type);
void amx_matmul_rows(const uint8_t* w, int type, int rows, int cols, const uint16_t* x, int T, float* y, int r0, int r1);
void quantize_bf16(const float* x, void* y, int n);

// Activation quantization (scalar; once per call, O(T * cols)).
void quantize_row_a32(const float* x, block_a32* y, int n);
void quantize_row_aK(const float* x, block_aK* y, int n);
size_t act_row_bytes(ActFormat f, int cols);

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avx512bf16 = false;
    bool amx_tile = false, amx_int8 = false, amx_bf16 = false, amx_permitted = false;
    bool os_avx = false, os_avx512 = false;
};
const CpuFeatures& cpu_features();
bool isa_supported(Isa isa);
Isa best_isa();
const char* isa_name(Isa isa);
bool parse_isa(const std::string& name, Isa* out);

}  // namespace kt

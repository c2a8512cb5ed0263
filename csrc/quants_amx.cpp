// AMX matmul for batches of tokens: weights dequantized once per 16-row panel into
// bf16 tiles (VNNI pair layout), activations in bf16, TDPBF16PS accumulating f32 in
// the tile registers across the whole row. bf16 rather than int8 tiles because
// every GGUF block carries its own scale: int8 tiles would need an f32 epilogue per
// 32-value block, while bf16 folds the scales into the weights once per panel.
// Compiled with the AMX and AVX-512 flags; used only when cpu_features() says so.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"

namespace kt {
namespace {

constexpr int kPanel = 16;      // weight rows per B tile (its 16 columns of pairs)
constexpr int kTokens = 16;     // tokens per A / C tile
constexpr int kTileK = 32;      // bf16 values of a row per tile (64 bytes)
constexpr int kTileBytes = 1024;

struct alignas(64) TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "the tile configuration is 64 bytes");

// Tiles 0-1: C (f32 16x16), 2-3: A (16 tokens x 32 bf16), 4: B (16 pairs x 16 rows x 2 bf16).
void load_tile_config() {
    TileConfig cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 5; ++i) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    // GCC 12 treats the stores above as dead (it cannot see LDTILECFG read them) and drops
    // them; that is llama.cpp's crash on this hardware (its issue #20824). The empty asm
    // that takes the address and clobbers memory makes the stores observable.
    asm volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

inline uint16_t to_bf16(float f) {  // round to nearest even
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// One row of GGUF blocks into cols floats.
void dequantize_row(int type, const uint8_t* row, int cols, float* y) {
    switch (type) {
        case GGML_Q4_0: case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: {
            const bool five = type == GGML_Q5_0 || type == GGML_Q5_1, min = type == GGML_Q4_1 || type == GGML_Q5_1;
            const int size = quant_traits(type).type_size, offset = min ? 0 : five ? 16 : 8;
            for (int i = 0; i < cols / QK; ++i, row += size, y += QK) {
                uint16_t d16, m16 = 0;
                std::memcpy(&d16, row, 2);
                if (min) std::memcpy(&m16, row + 2, 2);
                const uint8_t* qh = row + (min ? 4 : 2);
                const uint8_t* qs = qh + (five ? 4 : 0);
                uint32_t h = 0;
                if (five) std::memcpy(&h, qh, 4);
                const float d = f16(d16), m = min ? f16(m16) : 0.f;
                for (int j = 0; j < QK / 2; ++j) {
                    const int lo = (qs[j] & 0xF) | (((h >> j) & 1) << 4), hi = (qs[j] >> 4) | (((h >> (j + 16)) & 1) << 4);
                    y[j] = d * float(lo - offset) + m;
                    y[j + QK / 2] = d * float(hi - offset) + m;
                }
            }
            return;
        }
        case GGML_Q8_0: {
            const block_q8_0* b = reinterpret_cast<const block_q8_0*>(row);
            for (int i = 0; i < cols / QK; ++i, y += QK)
                for (int j = 0; j < QK; ++j) y[j] = f16(b[i].d) * float(b[i].qs[j]);
            return;
        }
        case GGML_Q4_K: case GGML_Q5_K: {
            const bool five = type == GGML_Q5_K;
            const int size = quant_traits(type).type_size;
            for (int i = 0; i < cols / QK_K; ++i, row += size) {
                const block_q5_K* b5 = reinterpret_cast<const block_q5_K*>(row);
                const block_q4_K* b4 = reinterpret_cast<const block_q4_K*>(row);
                const uint8_t* q = five ? b5->qs : b4->qs;
                const float d = f16(b4->d), dmin = f16(b4->dmin);  // same offsets in both layouts
                for (int j = 0; j < 4; ++j, q += 32) {
                    int sc1, m1, sc2, m2;
                    scale_min_k4(2 * j, b4->scales, &sc1, &m1);
                    scale_min_k4(2 * j + 1, b4->scales, &sc2, &m2);
                    for (int l = 0; l < 32; ++l) {  // low nibbles: sub-block 2j; high: 2j + 1
                        const int h1 = five ? ((b5->qh[l] >> (2 * j)) & 1) << 4 : 0;
                        const int h2 = five ? ((b5->qh[l] >> (2 * j + 1)) & 1) << 4 : 0;
                        y[l] = d * sc1 * float((q[l] & 0xF) | h1) - dmin * m1;
                        y[l + 32] = d * sc2 * float((q[l] >> 4) | h2) - dmin * m2;
                    }
                    y += 64;
                }
            }
            return;
        }
        case GGML_Q6_K: {
            const block_q6_K* b = reinterpret_cast<const block_q6_K*>(row);
            for (int i = 0; i < cols / QK_K; ++i) {
                const float d = f16(b[i].d);
                for (int n = 0; n < 2; ++n, y += 128) {
                    const uint8_t *ql = b[i].ql + 64 * n, *qh = b[i].qh + 32 * n;
                    const int8_t* sc = b[i].scales + 8 * n;
                    for (int l = 0; l < 32; ++l) {
                        const int is = l / 16;
                        y[l] = d * sc[is] * float(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                        y[l + 32] = d * sc[is + 2] * float(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                        y[l + 64] = d * sc[is + 4] * float(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                        y[l + 96] = d * sc[is + 6] * float(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                    }
                }
            }
            return;
        }
    }
}

// Rows [r0, r0 + 16) of the weight as B tiles: tile kt holds the pairs (k, k+1) for
// k in [32 kt, 32 kt + 32), row p of the tile = pair p, column n = weight row r0 + n.
void pack_panel(int type, const uint8_t* w, size_t w_row, int rows, int cols, int r0, uint8_t* panel,
                std::vector<float>& row_f32) {
    row_f32.resize(cols);
    std::memset(panel, 0, size_t(cols / kTileK) * kTileBytes);
    for (int n = 0; n < kPanel && r0 + n < rows; ++n) {
        dequantize_row(type, w + w_row * (r0 + n), cols, row_f32.data());
        for (int k = 0; k < cols; k += 2) {
            const uint32_t pair = uint32_t(to_bf16(row_f32[k])) | uint32_t(to_bf16(row_f32[k + 1])) << 16;
            std::memcpy(panel + size_t(k / kTileK) * kTileBytes + size_t((k % kTileK) / 2) * 64 + size_t(n) * 4, &pair, 4);
        }
    }
}

}  // namespace

bool amx_supports(int type) {
    switch (type) {
        case GGML_Q4_0: case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1: case GGML_Q8_0:
        case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K: return true;
        default: return false;
    }
}

void quantize_bf16(const float* x, void* vy, int n) {
    uint16_t* y = static_cast<uint16_t*>(vy);
    for (int i = 0; i < n; ++i) y[i] = to_bf16(x[i]);
}

void amx_matmul_rows(const uint8_t* w, int type, int rows, int cols, const uint16_t* x, int T, float* y, int r0, int r1) {
    thread_local std::vector<uint8_t> panel;
    thread_local std::vector<float> row_f32;
    panel.resize(size_t(cols / kTileK) * kTileBytes);
    const size_t w_row = size_t(cols / quant_traits(type).block_size) * quant_traits(type).type_size;
    const size_t x_stride = size_t(cols) * 2;
    alignas(64) float c[2][kTokens][kPanel];
    alignas(64) uint16_t pad[2][kTokens][kTileK];  // ragged last token tile, zero padded
    load_tile_config();
    for (int p0 = r0; p0 < r1; p0 += kPanel) {
        pack_panel(type, w, w_row, rows, cols, p0, panel.data(), row_f32);
        for (int t0 = 0; t0 < T; t0 += 2 * kTokens) {
            _tile_zero(0);
            _tile_zero(1);
            const bool full = t0 + 2 * kTokens <= T;
            for (int k = 0; k < cols; k += kTileK) {
                _tile_loadd(4, panel.data() + size_t(k / kTileK) * kTileBytes, 64);
                if (full) {
                    _tile_loadd(2, x + size_t(t0) * cols + k, x_stride);
                    _tile_loadd(3, x + size_t(t0 + kTokens) * cols + k, x_stride);
                } else {
                    std::memset(pad, 0, sizeof pad);
                    for (int t = t0; t < std::min(T, t0 + 2 * kTokens); ++t)
                        std::memcpy(pad[(t - t0) / kTokens][(t - t0) % kTokens], x + size_t(t) * cols + k, 64);
                    _tile_loadd(2, pad[0], 64);
                    _tile_loadd(3, pad[1], 64);
                }
                _tile_dpbf16ps(0, 2, 4);
                _tile_dpbf16ps(1, 3, 4);
            }
            _tile_stored(0, c[0], 64);
            _tile_stored(1, c[1], 64);
            for (int t = t0; t < std::min(T, t0 + 2 * kTokens); ++t)
                for (int n = 0; n < kPanel && p0 + n < r1; ++n)
                    y[size_t(t) * rows + p0 + n] = c[(t - t0) / kTokens][(t - t0) % kTokens][n];
        }
    }
    _tile_release();
}

}  // namespace kt

// Format traits, activation quantization and the scalar reference dots.
// Compiled with no ISA flags. Every dot splits a weight block into unsigned
// codes times the int8 activations (integer sums) and the format's offset or
// min times the activation sums, the same algebra the SIMD files use.
#include <cmath>

#include "kernels.h"

namespace kt {

const QuantTraits& quant_traits(int t) {
    static constexpr auto table = [] {
        struct { QuantTraits t[GGML_TYPE_COUNT]; } x{};
        x.t[GGML_F32] = {1, 4, ActFormat::f32};
        x.t[GGML_F16] = {1, 2, ActFormat::f32};
        x.t[GGML_BF16] = {1, 2, ActFormat::f32};
        x.t[GGML_Q4_0] = {QK, sizeof(block_q4_0), ActFormat::a32};
        x.t[GGML_Q4_1] = {QK, sizeof(block_q4_1), ActFormat::a32};
        x.t[GGML_Q5_0] = {QK, sizeof(block_q5_0), ActFormat::a32};
        x.t[GGML_Q5_1] = {QK, sizeof(block_q5_1), ActFormat::a32};
        x.t[GGML_Q8_0] = {QK, sizeof(block_q8_0), ActFormat::a32};
        x.t[GGML_Q4_K] = {QK_K, sizeof(block_q4_K), ActFormat::aK};
        x.t[GGML_Q5_K] = {QK_K, sizeof(block_q5_K), ActFormat::aK};
        x.t[GGML_Q6_K] = {QK_K, sizeof(block_q6_K), ActFormat::aK};
        return x;
    }();
    static const QuantTraits none{};
    return t >= 0 && t < GGML_TYPE_COUNT ? table.t[t] : none;
}

size_t act_row_bytes(ActFormat f, int cols) {
    switch (f) {
        case ActFormat::f32: return size_t(cols) * sizeof(float);
        case ActFormat::a32: return size_t(cols / QK) * sizeof(block_a32);
        case ActFormat::aK: return size_t(cols / QK_K) * sizeof(block_aK);
        case ActFormat::bf16: return size_t(cols) * 2;
    }
    return 0;
}

// Symmetric 8-bit: d = amax / 127, so each value is off by at most d / 2.
static float quantize_block(const float* x, int8_t* q, int n) {
    float amax = 0.f;
    for (int j = 0; j < n; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < n; ++j) q[j] = int8_t(std::lrintf(x[j] * id));
    return d;
}

// llama.cpp stores Q8_1's d and s as f16; rounding ours the same way keeps kt's
// logits closest to llama.cpp's (the reference users compare against).
static float round_f16(float v) { return float(_Float16(v)); }

void quantize_row_a32(const float* x, block_a32* y, int n) {
    for (int i = 0; i < n / QK; ++i, x += QK) {
        const float d = quantize_block(x, y[i].qs, QK);
        int sum = 0;
        for (int j = 0; j < QK; ++j) sum += y[i].qs[j];
        y[i].d = round_f16(d);
        y[i].s = round_f16(d * float(sum));
        y[i].sum = sum;
    }
}

void quantize_row_aK(const float* x, block_aK* y, int n) {
    for (int i = 0; i < n / QK_K; ++i, x += QK_K) {
        y[i].d = quantize_block(x, y[i].qs, QK_K);
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
            y[i].bsums[g] = int16_t(sum);
        }
    }
}

namespace {

// Unsigned codes of one 32-block: nibble j (low nibbles first), plus bit j of qh as 16.
void unpack_q4(const uint8_t* qs, uint8_t* u) {
    for (int j = 0; j < QK / 2; ++j) { u[j] = qs[j] & 0xF; u[j + QK / 2] = qs[j] >> 4; }
}
void unpack_q5(const uint8_t* qs, const uint8_t* qh, uint8_t* u) {
    uint32_t h; std::memcpy(&h, qh, 4);
    unpack_q4(qs, u);
    for (int j = 0; j < QK; ++j) u[j] |= ((h >> j) & 1) << 4;
}

int dot_u8s8(const uint8_t* u, const int8_t* a, int n) {
    int s = 0;
    for (int j = 0; j < n; ++j) s += int(u[j]) * int(a[j]);
    return s;
}

// Weight value = d * (code - offset) + m, summed against one a32 block.
float combine32(float d, float m, int offset, int sumi, const block_a32& a) {
    return d * a.d * float(sumi - offset * a.sum) + m * a.s;
}

template <int Offset, bool HasMin, bool Five, typename B>
float dot_32block(int nb, const void* vw, const void* va) {
    const B* w = static_cast<const B*>(vw);
    const block_a32* a = static_cast<const block_a32*>(va);
    float acc = 0.f;
    for (int i = 0; i < nb; ++i) {
        uint8_t u[QK];
        if constexpr (Five) unpack_q5(w[i].qs, w[i].qh, u); else unpack_q4(w[i].qs, u);
        float m = 0.f;
        if constexpr (HasMin) m = fp16_to_f32(w[i].m);
        acc += combine32(fp16_to_f32(w[i].d), m, Offset, dot_u8s8(u, a[i].qs, QK), a[i]);
    }
    return acc;
}

float dot_q8_0(int nb, const void* vw, const void* va) {
    const block_q8_0* w = static_cast<const block_q8_0*>(vw);
    const block_a32* a = static_cast<const block_a32*>(va);
    float acc = 0.f;
    for (int i = 0; i < nb; ++i) {
        int s = 0;
        for (int j = 0; j < QK; ++j) s += int(w[i].qs[j]) * int(a[i].qs[j]);
        acc += fp16_to_f32(w[i].d) * a[i].d * float(s);
    }
    return acc;
}

// Q4_K / Q5_K: 8 sub-blocks of 32; value = d * sc * code - dmin * m.
template <bool Five, typename B>
float dot_qk45(int nb, const void* vw, const void* va) {
    const B* w = static_cast<const B*>(vw);
    const block_aK* a = static_cast<const block_aK*>(va);
    float acc = 0.f;
    for (int i = 0; i < nb; ++i) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
            const uint8_t* qs = w[i].qs + 32 * (j / 2);
            uint8_t u[32];
            for (int l = 0; l < 32; ++l) {
                u[l] = j % 2 ? qs[l] >> 4 : qs[l] & 0xF;
                if constexpr (Five) u[l] |= ((w[i].qh[l] >> j) & 1) << 4;
            }
            int sc, m;
            scale_min_k4(j, w[i].scales, &sc, &m);
            sumi += sc * dot_u8s8(u, a[i].qs + 32 * j, 32);
            summ += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
        }
        acc += a[i].d * (fp16_to_f32(w[i].d) * float(sumi) - fp16_to_f32(w[i].dmin) * float(summ));
    }
    return acc;
}

// Q6_K: 16 sub-blocks of 16; value = d * sc * (code - 32), code = 4 low | 2 high bits.
float dot_q6_K(int nb, const void* vw, const void* va) {
    const block_q6_K* w = static_cast<const block_q6_K*>(vw);
    const block_aK* a = static_cast<const block_aK*>(va);
    float acc = 0.f;
    for (int i = 0; i < nb; ++i) {
        uint8_t u[QK_K];
        for (int n = 0; n < 2; ++n) {
            const uint8_t *ql = w[i].ql + 64 * n, *qh = w[i].qh + 32 * n;
            uint8_t* un = u + 128 * n;
            for (int l = 0; l < 32; ++l) {
                un[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                un[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                un[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                un[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        int sumi = 0;
        for (int j = 0; j < 16; ++j)
            sumi += w[i].scales[j] * (dot_u8s8(u + 16 * j, a[i].qs + 16 * j, 16) - 32 * a[i].bsums[j]);
        acc += fp16_to_f32(w[i].d) * a[i].d * float(sumi);
    }
    return acc;
}

template <float (*Load)(const void*, int)>
float dot_float(int n, const void* w, const void* va) {
    const float* x = static_cast<const float*>(va);
    float acc = 0.f;
    for (int j = 0; j < n; ++j) acc += Load(w, j) * x[j];
    return acc;
}
float load_f32(const void* w, int j) { return static_cast<const float*>(w)[j]; }
float load_f16(const void* w, int j) { return fp16_to_f32(static_cast<const uint16_t*>(w)[j]); }
float load_bf16(const void* w, int j) { return bf16_to_f32(static_cast<const uint16_t*>(w)[j]); }

}  // namespace

const DotTable& dots_scalar() {
    static constexpr DotTable t = [] {
        DotTable t;
        t.dot[GGML_F32] = dot_float<load_f32>;
        t.dot[GGML_F16] = dot_float<load_f16>;
        t.dot[GGML_BF16] = dot_float<load_bf16>;
        t.dot[GGML_Q4_0] = dot_32block<8, false, false, block_q4_0>;
        t.dot[GGML_Q4_1] = dot_32block<0, true, false, block_q4_1>;
        t.dot[GGML_Q5_0] = dot_32block<16, false, true, block_q5_0>;
        t.dot[GGML_Q5_1] = dot_32block<0, true, true, block_q5_1>;
        t.dot[GGML_Q8_0] = dot_q8_0;
        t.dot[GGML_Q4_K] = dot_qk45<false, block_q4_K>;
        t.dot[GGML_Q5_K] = dot_qk45<true, block_q5_K>;
        t.dot[GGML_Q6_K] = dot_q6_K;
        return t;
    }();
    return t;
}

}  // namespace kt

// AVX-512 (F, BW, VL, VNNI) dots. Compiled with the AVX-512 flags; called only
// after cpu_features() says so. 32-blocks: VPDPBUSD (u8 x s8 -> int32), 256-bit,
// one block per register. K-quants: 512-bit, two 32-value sub-blocks (Q4_K, Q5_K)
// or four 16-value ones (Q6_K) per register; VPMADDUBSW then VPDPWSSD with the
// sub-block scales, which folds the scale multiply into the accumulate (the int16
// pair sums cannot saturate: codes <= 63, |a| <= 127).
#include <immintrin.h>

#include <type_traits>

#include "kernels.h"

namespace kt {
namespace {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }
inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m256i dot_u8s8(__m256i u, __m256i a) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a); }
inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

inline __m256i unpack_nibbles(const uint8_t* qs) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m = _mm_set1_epi8(0xF);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m), _mm_and_si128(t, m));
}
inline __m256i high_bits(const uint8_t* qh) {
    uint32_t h; std::memcpy(&h, qh, 4);
    return _mm256_maskz_mov_epi8(__mmask32(h), _mm256_set1_epi8(0x10));
}

// Q8_0 as unsigned codes: w + 128 (a sign flip of each byte), offset 128.
struct block_q8_0_as_u8 : block_q8_0 {};

template <int Offset, bool HasMin, bool Five, typename B>
inline __m256i codes(const B& b) {
    if constexpr (std::is_same_v<B, block_q8_0_as_u8>) return _mm256_xor_si256(load(b.qs), _mm256_set1_epi8(char(0x80)));
    else {
        __m256i u = unpack_nibbles(b.qs);
        if constexpr (Five) u = _mm256_or_si256(u, high_bits(b.qh));
        return u;
    }
}

// R weight rows x N tokens of a 32-block format. Per block: each row's codes unpacked once,
// each token's activations loaded once, R x N VPDPBUSD. w = d * (code - Offset) + m: the offset
// comes off in the integers (each token's accumulator starts at -Offset * its 4-value sums, as
// exact as llama.cpp's), the min adds m * s_a, kept per row in xmm lanes (one per token).
// The matvec dot is this with R = N = 1, so a token's result never depends on its batch.
template <int Offset, bool HasMin, bool Five, typename B, int R, int N>
void tile_32block_rn(int nb, const uint8_t* w, size_t w_row, const uint8_t* a, size_t a_row, float* y, size_t y_stride) {
    __m256 acc[R][N];
    __m128 corr[R];
    for (int r = 0; r < R; ++r) {
        corr[r] = _mm_setzero_ps();
        for (int n = 0; n < N; ++n) acc[r][n] = _mm256_setzero_ps();
    }
    for (int k = 0; k < nb; ++k) {
        __m256i av[N], start[N];
        __m256 da[N];
        float sa[4] = {};
        for (int n = 0; n < N; ++n) {
            const block_a32& ab = reinterpret_cast<const block_a32*>(a + a_row * n)[k];
            av[n] = load(ab.qs);
            da[n] = _mm256_set1_ps(ab.d);
            sa[n] = ab.s;
            start[n] = _mm256_setzero_si256();
            if constexpr (Offset != 0) start[n] = _mm256_sub_epi32(start[n], dot_u8s8(_mm256_set1_epi8(char(Offset)), av[n]));
        }
        // From registers: a 16-byte load of floats just stored one by one would stall store forwarding.
        const __m128 sav = _mm_setr_ps(sa[0], sa[1], sa[2], sa[3]);
        for (int r = 0; r < R; ++r) {
            const B& wb = reinterpret_cast<const B*>(w + w_row * r)[k];
            const __m256i u = codes<Offset, HasMin, Five>(wb);
            if constexpr (HasMin) corr[r] = _mm_fmadd_ps(_mm_set1_ps(f16(wb.m)), sav, corr[r]);
            const __m256 dv = _mm256_set1_ps(f16(wb.d));
            for (int n = 0; n < N; ++n) {
                const __m256i lanes = _mm256_dpbusd_epi32(start[n], u, av[n]);
                acc[r][n] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lanes), da[n]), dv, acc[r][n]);
            }
        }
    }
    for (int r = 0; r < R; ++r) {
        alignas(16) float c[4];
        _mm_store_ps(c, corr[r]);
        for (int n = 0; n < N; ++n) y[y_stride * n + r] = hsum(acc[r][n]) + c[n];
    }
}

// The R x N tile of a kernel family K (K::tile<R, N>) for any R, N <= kTileSize.
template <typename K>
void tile_dispatch(int nb, const uint8_t* w, size_t w_row, int R, const uint8_t* a, size_t a_row, int N, float* y,
                   size_t y_stride) {
    using Fn = void (*)(int, const uint8_t*, size_t, const uint8_t*, size_t, float*, size_t);
    static constexpr Fn table[kTileSize][kTileSize] = {
#define KT_ROW(r) {K::template tile<r, 1>, K::template tile<r, 2>, K::template tile<r, 3>, K::template tile<r, 4>}
        KT_ROW(1), KT_ROW(2), KT_ROW(3), KT_ROW(4)
#undef KT_ROW
    };
    table[R - 1][N - 1](nb, w, w_row, a, a_row, y, y_stride);
}

template <typename K>
float dot_of_tile(int nb, const void* w, const void* a) {  // one row, one token: the tile's own arithmetic
    float y;
    K::template tile<1, 1>(nb, static_cast<const uint8_t*>(w), 0, static_cast<const uint8_t*>(a), 0, &y, 0);
    return y;
}

template <int Offset, bool HasMin, bool Five, typename B>
struct Block32 {
    template <int R, int N>
    static void tile(int nb, const uint8_t* w, size_t w_row, const uint8_t* a, size_t a_row, float* y, size_t y_stride) {
        tile_32block_rn<Offset, HasMin, Five, B, R, N>(nb, w, w_row, a, a_row, y, y_stride);
    }
};

// R weight rows x N tokens of a K-quant. Per super-block each row's codes and sub-block
// scales are unpacked once (K::Weights), then every token multiplies them (K::accumulate).
template <typename K, int R, int N>
void tile_kquant(int nb, const uint8_t* w, size_t w_row, const uint8_t* a, size_t a_row, float* y, size_t y_stride) {
    __m512 acc[R][N];
    float corr[R][N] = {};
    for (int r = 0; r < R; ++r)
        for (int n = 0; n < N; ++n) acc[r][n] = _mm512_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        for (int r = 0; r < R; ++r) {
            const typename K::Weights wt(reinterpret_cast<const typename K::Block*>(w + w_row * r)[i]);
            for (int n = 0; n < N; ++n)
                wt.accumulate(reinterpret_cast<const block_aK*>(a + a_row * n)[i], acc[r][n], corr[r][n]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int n = 0; n < N; ++n) y[y_stride * n + r] = _mm512_reduce_add_ps(acc[r][n]) + corr[r][n];
}

// Q4_K / Q5_K: 512-bit, two 32-value sub-blocks per register; VPMADDUBSW then VPDPWSSD with
// the sub-block scales (the int16 pair sums cannot saturate: codes <= 31, |a| <= 127).
template <bool Five, typename B>
struct QK45 {
    using Block = B;
    struct Weights {
        __m512i u[4], scv[4];
        int mn[8];
        float d, dmin;
        explicit Weights(const B& b) : d(f16(b.d)), dmin(f16(b.dmin)) {
            const __m256i m4 = _mm256_set1_epi8(0xF), sixteen = _mm256_set1_epi8(0x10);
            __m256i hb = _mm256_setzero_si256();
            if constexpr (Five) hb = load(b.qh);
            int sc[8];
            for (int j = 0; j < 8; ++j) scale_min_k4(j, b.scales, &sc[j], &mn[j]);
            for (int j = 0; j < 4; ++j) {  // 64 values: sub-blocks 2j (low nibbles) and 2j+1 (high)
                const __m256i q = load(b.qs + 32 * j);
                __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if constexpr (Five) {
                    const __mmask32 blo = _mm256_test_epi8_mask(hb, _mm256_set1_epi8(char(1 << (2 * j))));
                    const __mmask32 bhi = _mm256_test_epi8_mask(hb, _mm256_set1_epi8(char(2 << (2 * j))));
                    lo = _mm256_or_si256(lo, _mm256_maskz_mov_epi8(blo, sixteen));
                    hi = _mm256_or_si256(hi, _mm256_maskz_mov_epi8(bhi, sixteen));
                }
                u[j] = join(lo, hi);
                scv[j] = join(_mm256_set1_epi16(int16_t(sc[2 * j])), _mm256_set1_epi16(int16_t(sc[2 * j + 1])));
            }
        }
        void accumulate(const block_aK& a, __m512& acc, float& corr) const {
            __m512i sumi = _mm512_setzero_si512();
            for (int j = 0; j < 4; ++j) sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(u[j], load512(a.qs + 64 * j)), scv[j]);
            int summ = 0;
            for (int j = 0; j < 8; ++j) summ += mn[j] * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * a.d), _mm512_cvtepi32_ps(sumi), acc);
            corr -= dmin * a.d * float(summ);
        }
    };
    template <int R, int N>
    static void tile(int nb, const uint8_t* w, size_t w_row, const uint8_t* a, size_t a_row, float* y, size_t y_stride) {
        tile_kquant<QK45, R, N>(nb, w, w_row, a, a_row, y, y_stride);
    }
};

// Q6_K: four 16-value sub-blocks per register, so each scale covers 8 int16 pair sums; the
// -32 of every code is folded in as -32 * sum(sc * bsum).
struct Q6K {
    using Block = block_q6_K;
    struct Weights {
        __m512i ua[2], ub[2], sca[2], scb[2];
        __m256i scales16;
        float d;
        explicit Weights(const block_q6_K& b) : d(f16(b.d)) {
            const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3);
            const __m256i spread0 = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                     2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            const __m256i spread1 = _mm256_add_epi8(spread0, _mm256_set1_epi8(4));
            scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
            for (int n = 0; n < 2; ++n) {
                const __m512i ql = load512(b.ql + 64 * n);
                const __m256i qh = load(b.qh + 32 * n);
                const __m512i ha = join(qh, _mm256_srli_epi16(qh, 2)), hb = join(_mm256_srli_epi16(qh, 4), _mm256_srli_epi16(qh, 6));
                ua[n] = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(_mm512_and_si512(ha, m2), 4));
                ub[n] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_slli_epi16(_mm512_and_si512(hb, m2), 4));
                const __m256i sc = _mm256_broadcastsi128_si256(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.scales + 8 * n)));
                sca[n] = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc, spread0));
                scb[n] = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(sc, spread1));
            }
        }
        void accumulate(const block_aK& a, __m512& acc, float&) const {
            const __m256i off = _mm256_madd_epi16(scales16, load(a.bsums));
            __m512i sumi = _mm512_castsi256_si512(_mm256_mullo_epi32(off, _mm256_set1_epi32(-32)));
            sumi = _mm512_inserti64x4(sumi, _mm256_setzero_si256(), 1);
            for (int n = 0; n < 2; ++n) {
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(ua[n], load512(a.qs + 128 * n)), sca[n]);
                sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(ub[n], load512(a.qs + 128 * n + 64)), scb[n]);
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(d * a.d), _mm512_cvtepi32_ps(sumi), acc);
        }
    };
    template <int R, int N>
    static void tile(int nb, const uint8_t* w, size_t w_row, const uint8_t* a, size_t a_row, float* y, size_t y_stride) {
        tile_kquant<Q6K, R, N>(nb, w, w_row, a, a_row, y, y_stride);
    }
};

// Activation quantization with the scalar code's exact arithmetic (d = amax / 127, x * (1 / d)
// rounded to nearest even, d and s rounded to f16), sixteen values per step.
inline float round_f16(float v) { return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT)); }

template <int N>  // values per block; q16[g]: the codes of values 16g .. 16g + 15 as int32
inline float quantize_block16(const float* x, int8_t* q, __m512i* q16) {
    __m512 amax = _mm512_setzero_ps();
    for (int j = 0; j < N; j += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
    const float d = _mm512_reduce_max_ps(amax) / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < N; j += 16) {
        q16[j / 16] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + j), _mm512_set1_ps(id)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtepi32_epi8(q16[j / 16]));
    }
    return d;
}

void quantize_a32(const float* x, void* vy, int n) {
    block_a32* y = static_cast<block_a32*>(vy);
    for (int i = 0; i < n / QK; ++i, x += QK) {
        __m512i q16[2];
        const float d = quantize_block16<QK>(x, y[i].qs, q16);
        y[i].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q16[0], q16[1]));
        y[i].d = round_f16(d);
        y[i].s = round_f16(d * float(y[i].sum));
    }
}

void quantize_aK(const float* x, void* vy, int n) {
    block_aK* y = static_cast<block_aK*>(vy);
    for (int i = 0; i < n / QK_K; ++i, x += QK_K) {
        __m512i q16[QK_K / 16];
        y[i].d = quantize_block16<QK_K>(x, y[i].qs, q16);
        for (int g = 0; g < QK_K / 16; ++g) y[i].bsums[g] = int16_t(_mm512_reduce_add_epi32(q16[g]));
    }
}

inline __m512 load16_f32(const void* w, int j) { return _mm512_loadu_ps(static_cast<const float*>(w) + j); }
inline __m512 load16_f16(const void* w, int j) { return _mm512_cvtph_ps(load(static_cast<const uint16_t*>(w) + j)); }
inline __m512 load16_bf16(const void* w, int j) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load(static_cast<const uint16_t*>(w) + j)), 16));
}
inline float load1_f32(const void* w, int j) { return static_cast<const float*>(w)[j]; }
inline float load1_f16(const void* w, int j) { return f16(static_cast<const uint16_t*>(w)[j]); }
inline float load1_bf16(const void* w, int j) { return bf16_to_f32(static_cast<const uint16_t*>(w)[j]); }

template <__m512 (*Load16)(const void*, int), float (*Load1)(const void*, int)>
float dot_float(int n, const void* w, const void* va) {
    const float* x = static_cast<const float*>(va);
    __m512 acc = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) acc = _mm512_fmadd_ps(Load16(w, j), _mm512_loadu_ps(x + j), acc);
    float s = _mm512_reduce_add_ps(acc);
    for (; j < n; ++j) s += Load1(w, j) * x[j];
    return s;
}

}  // namespace

const DotTable& dots_avx512() {
    static constexpr DotTable t = [] {
        DotTable t;
        t.dot[GGML_F32] = dot_float<load16_f32, load1_f32>;
        t.dot[GGML_F16] = dot_float<load16_f16, load1_f16>;
        t.dot[GGML_BF16] = dot_float<load16_bf16, load1_bf16>;
        using Q4_0 = Block32<8, false, false, block_q4_0>;
        using Q4_1 = Block32<0, true, false, block_q4_1>;
        using Q5_0 = Block32<16, false, true, block_q5_0>;
        using Q5_1 = Block32<0, true, true, block_q5_1>;
        using Q8_0 = Block32<128, false, false, block_q8_0_as_u8>;
        using Q4_K = QK45<false, block_q4_K>;
        using Q5_K = QK45<true, block_q5_K>;
        t.dot[GGML_Q4_0] = dot_of_tile<Q4_0>;
        t.dot[GGML_Q4_1] = dot_of_tile<Q4_1>;
        t.dot[GGML_Q5_0] = dot_of_tile<Q5_0>;
        t.dot[GGML_Q5_1] = dot_of_tile<Q5_1>;
        t.dot[GGML_Q8_0] = dot_of_tile<Q8_0>;
        t.dot[GGML_Q4_K] = dot_of_tile<Q4_K>;
        t.dot[GGML_Q5_K] = dot_of_tile<Q5_K>;
        t.dot[GGML_Q6_K] = dot_of_tile<Q6K>;
        t.tile[GGML_Q4_0] = tile_dispatch<Q4_0>;
        t.tile[GGML_Q4_1] = tile_dispatch<Q4_1>;
        t.tile[GGML_Q5_0] = tile_dispatch<Q5_0>;
        t.tile[GGML_Q5_1] = tile_dispatch<Q5_1>;
        t.tile[GGML_Q8_0] = tile_dispatch<Q8_0>;
        t.tile[GGML_Q4_K] = tile_dispatch<Q4_K>;
        t.tile[GGML_Q5_K] = tile_dispatch<Q5_K>;
        t.tile[GGML_Q6_K] = tile_dispatch<Q6K>;
        t.quantize[int(ActFormat::a32)] = quantize_a32;
        t.quantize[int(ActFormat::aK)] = quantize_aK;
        return t;
    }();
    return t;
}

}  // namespace kt

// AVX2 + FMA + F16C dots. Compiled with -mavx2 -mfma -mf16c; called only after
// cpu_features() says so. u8 x s8 products go through _mm256_maddubs_epi16, whose
// int16 pair sums stay unsaturated because every unsigned code here is <= 128 and
// |a| <= 127 (Q8_0 takes |w| and moves its sign onto a).
#include <immintrin.h>

#include "kernels.h"

namespace kt {
namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline int hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}
inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// 16 bytes of nibbles -> 32 codes, low nibbles first (the 32-block layout).
inline __m256i unpack_nibbles(const uint8_t* qs) {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)), m = _mm_set1_epi8(0xF);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), m), _mm_and_si128(t, m));
}
// Bit j of the 32 bits at qh -> 0x10 in byte j.
inline __m256i high_bits(const uint8_t* qh) {
    uint32_t h; std::memcpy(&h, qh, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32(int(h)), shuf);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_and_si256(_mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}
inline __m256i load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
// 8 int32 partial sums of u . a (4 products each).
inline __m256i dot_u8s8(__m256i u, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
}

template <int Offset, bool HasMin, bool Five, typename B>
float dot_32block(int nb, const void* vw, const void* va) {
    const B* w = static_cast<const B*>(vw);
    const block_a32* a = static_cast<const block_a32*>(va);
    __m256 acc = _mm256_setzero_ps();
    float corr = 0.f;
    for (int i = 0; i < nb; ++i) {
        __m256i u = unpack_nibbles(w[i].qs);
        if constexpr (Five) u = _mm256_or_si256(u, high_bits(w[i].qh));
        const float d = f16(w[i].d);
        float m = 0.f;
        if constexpr (HasMin) m = f16(w[i].m);
        const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(u, load(a[i].qs)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a[i].d), p, acc);
        corr += m * a[i].s - float(Offset) * d * a[i].d * float(a[i].sum);
    }
    return hsum(acc) + corr;
}

float dot_q8_0(int nb, const void* vw, const void* va) {
    const block_q8_0* w = static_cast<const block_q8_0*>(vw);
    const block_a32* a = static_cast<const block_a32*>(va);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const __m256i q = load(w[i].qs), x = load(a[i].qs);
        const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w[i].d) * a[i].d), p, acc);
    }
    return hsum(acc);
}

template <bool Five, typename B>
float dot_qk45(int nb, const void* vw, const void* va) {
    const B* w = static_cast<const B*>(vw);
    const block_aK* a = static_cast<const block_aK*>(va);
    const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float corr = 0.f;
    for (int i = 0; i < nb; ++i) {
        int sc[8], mn[8], summ = 0;
        for (int j = 0; j < 8; ++j) {
            scale_min_k4(j, w[i].scales, &sc[j], &mn[j]);
            summ += mn[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
        }
        __m256i hb = _mm256_setzero_si256();
        if constexpr (Five) hb = load(w[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
            const __m256i q = load(w[i].qs + 32 * j);
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if constexpr (Five) {
                const __m256i b0 = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j)), one);
                const __m256i b1 = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j + 1)), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            const __m256i plo = _mm256_maddubs_epi16(lo, load(a[i].qs + 64 * j));
            const __m256i phi = _mm256_maddubs_epi16(hi, load(a[i].qs + 64 * j + 32));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(int16_t(sc[2 * j]))));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(int16_t(sc[2 * j + 1]))));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w[i].d) * a[i].d), _mm256_cvtepi32_ps(sumi), acc);
        corr -= f16(w[i].dmin) * a[i].d * float(summ);
    }
    return hsum(acc) + corr;
}

float dot_q6_K(int nb, const void* vw, const void* va) {
    const block_q6_K* w = static_cast<const block_q6_K*>(vw);
    const block_aK* a = static_cast<const block_aK*>(va);
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        int off = 0;  // the -32 of every code, folded as 32 * sum(sc * bsum)
        for (int j = 0; j < 16; ++j) off += w[i].scales[j] * a[i].bsums[j];
        __m256i sumi = _mm256_setzero_si256();
        for (int n = 0; n < 2; ++n) {
            const __m256i ql0 = load(w[i].ql + 64 * n), ql1 = load(w[i].ql + 64 * n + 32), qh = load(w[i].qh + 32 * n);
            const __m256i u[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4)),
            };
            for (int k = 0; k < 4; ++k) {
                const int8_t* sc = w[i].scales + 8 * n + 2 * k;  // one scale per 16 codes = per 128-bit lane
                const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
                const __m256i p = _mm256_maddubs_epi16(u[k], load(a[i].qs + 128 * n + 32 * k));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv));
            }
        }
        const __m256 s = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * off, 0, 0, 0, 0, 0, 0, 0)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(w[i].d) * a[i].d), s, acc);
    }
    return hsum(acc);
}

inline __m256 load8_f32(const void* w, int j) { return _mm256_loadu_ps(static_cast<const float*>(w) + j); }
inline __m256 load8_f16(const void* w, int j) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + j)));
}
inline __m256 load8_bf16(const void* w, int j) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + j));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline float load1_f32(const void* w, int j) { return static_cast<const float*>(w)[j]; }
inline float load1_f16(const void* w, int j) { return f16(static_cast<const uint16_t*>(w)[j]); }
inline float load1_bf16(const void* w, int j) { return bf16_to_f32(static_cast<const uint16_t*>(w)[j]); }

template <__m256 (*Load8)(const void*, int), float (*Load1)(const void*, int)>
float dot_float(int n, const void* w, const void* va) {
    const float* x = static_cast<const float*>(va);
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(Load8(w, j), _mm256_loadu_ps(x + j), acc);
    float s = hsum(acc);
    for (; j < n; ++j) s += Load1(w, j) * x[j];
    return s;
}

}  // namespace

const DotTable& dots_avx2() {
    static constexpr DotTable t = [] {
        DotTable t;
        t.dot[GGML_F32] = dot_float<load8_f32, load1_f32>;
        t.dot[GGML_F16] = dot_float<load8_f16, load1_f16>;
        t.dot[GGML_BF16] = dot_float<load8_bf16, load1_bf16>;
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

// The vector kernels, written as plain loops over fixed-size register tiles
// that the compiler turns into SIMD for whichever flags its file has; the f16
// conversions use F16C where the file has it. Included once per ISA file.
//
// Attention follows llama.cpp (flash attention off): the query and the softmax
// weights are rounded to f16 before their products with the f16 cache, and
// every product is accumulated in f32.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "vector_ops.h"

namespace kt {
namespace {

constexpr int kTile = 16;  // keys (scores) or value dimensions per tile: one vector register of floats
constexpr int kRows = 4;   // query rows sharing each loaded key / value
constexpr int kMaxHeadDim = 512;

inline void f16_to_f32(const uint16_t* src, float* dst, int n) {
    int i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
    for (; i < n; ++i) dst[i] = fp16_to_f32(src[i]);
}

void to_f16(const float* x, uint16_t* y, int n) {
    int i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; ++i) {
        const _Float16 h = _Float16(x[i]);
        std::memcpy(y + i, &h, 2);
    }
}

inline void round_to_f16(float* x, int n) {
    int i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
#endif
    for (; i < n; ++i) x[i] = float(_Float16(x[i]));
}

// exp(x) to about 2 ulp: 2^n * p(r), |r| <= ln2 / 2, written so that loops calling it vectorize.
inline float exp_approx(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float n = std::floor(x * 1.44269504f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln 2 split so that n * hi is exact
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    return p * scale;
}

// Sixteen floats: one zmm, two ymm, or a plain array, so the hot loops below are written once.
#if defined(__AVX512F__)
struct V16 { __m512 v; };
inline V16 vzero() { return {_mm512_setzero_ps()}; }
inline V16 vload(const float* p) { return {_mm512_loadu_ps(p)}; }
inline V16 vload_f16(const uint16_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))}; }
inline void vstore(float* p, V16 a) { _mm512_storeu_ps(p, a.v); }
inline V16 vfma(V16 a, float s, V16 acc) { return {_mm512_fmadd_ps(a.v, _mm512_set1_ps(s), acc.v)}; }
inline V16 vfmav(V16 a, V16 b, V16 acc) { return {_mm512_fmadd_ps(a.v, b.v, acc.v)}; }
inline V16 vmax(V16 a, V16 b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V16 vadd(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V16 vmul(V16 a, float s) { return {_mm512_mul_ps(a.v, _mm512_set1_ps(s))}; }
inline V16 vsub(V16 a, float s) { return {_mm512_sub_ps(a.v, _mm512_set1_ps(s))}; }
inline float vreduce_max(V16 a) { return _mm512_reduce_max_ps(a.v); }
inline float vreduce_add(V16 a) { return _mm512_reduce_add_ps(a.v); }
inline V16 vexp(V16 a) {  // exp_approx, lane-wise
    __m512 x = _mm512_min_ps(_mm512_max_ps(a.v, _mm512_set1_ps(-87.f)), _mm512_set1_ps(88.f));
    const __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), _mm512_set1_ps(0.5f)),
                                          _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return {_mm512_mul_ps(p, _mm512_castsi512_ps(bits))};
}
#elif defined(__AVX2__)
struct V16 { __m256 lo, hi; };
inline V16 vzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 vload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline V16 vload_f16(const uint16_t* p) {
    return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
}
inline void vstore(float* p, V16 a) { _mm256_storeu_ps(p, a.lo); _mm256_storeu_ps(p + 8, a.hi); }
inline V16 vfma(V16 a, float s, V16 acc) {
    const __m256 b = _mm256_set1_ps(s);
    return {_mm256_fmadd_ps(a.lo, b, acc.lo), _mm256_fmadd_ps(a.hi, b, acc.hi)};
}
inline V16 vfmav(V16 a, V16 b, V16 acc) { return {_mm256_fmadd_ps(a.lo, b.lo, acc.lo), _mm256_fmadd_ps(a.hi, b.hi, acc.hi)}; }
inline V16 vmax(V16 a, V16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline V16 vadd(V16 a, V16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline V16 vmul(V16 a, float s) { const __m256 b = _mm256_set1_ps(s); return {_mm256_mul_ps(a.lo, b), _mm256_mul_ps(a.hi, b)}; }
inline V16 vsub(V16 a, float s) { const __m256 b = _mm256_set1_ps(s); return {_mm256_sub_ps(a.lo, b), _mm256_sub_ps(a.hi, b)}; }
inline float vreduce_max(V16 a) { alignas(32) float t[8]; _mm256_store_ps(t, _mm256_max_ps(a.lo, a.hi)); float m = t[0]; for (float x : t) m = std::max(m, x); return m; }
inline float vreduce_add(V16 a) { alignas(32) float t[8]; _mm256_store_ps(t, _mm256_add_ps(a.lo, a.hi)); float s = 0; for (float x : t) s += x; return s; }
inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
    const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
inline V16 vexp(V16 a) { return {exp8(a.lo), exp8(a.hi)}; }
#else
struct V16 { float v[16]; };
inline V16 vzero() { return {}; }
inline V16 vload(const float* p) { V16 r; std::copy_n(p, 16, r.v); return r; }
inline V16 vload_f16(const uint16_t* p) { V16 r; for (int i = 0; i < 16; ++i) r.v[i] = fp16_to_f32(p[i]); return r; }
inline void vstore(float* p, V16 a) { std::copy_n(a.v, 16, p); }
inline V16 vfma(V16 a, float s, V16 acc) { for (int i = 0; i < 16; ++i) acc.v[i] += a.v[i] * s; return acc; }
inline V16 vfmav(V16 a, V16 b, V16 acc) { for (int i = 0; i < 16; ++i) acc.v[i] += a.v[i] * b.v[i]; return acc; }
inline V16 vmax(V16 a, V16 b) { for (int i = 0; i < 16; ++i) a.v[i] = std::max(a.v[i], b.v[i]); return a; }
inline V16 vadd(V16 a, V16 b) { for (int i = 0; i < 16; ++i) a.v[i] += b.v[i]; return a; }
inline V16 vmul(V16 a, float s) { for (float& x : a.v) x *= s; return a; }
inline V16 vsub(V16 a, float s) { for (float& x : a.v) x -= s; return a; }
inline float vreduce_max(V16 a) { return *std::max_element(a.v, a.v + 16); }
inline float vreduce_add(V16 a) { float s = 0; for (float x : a.v) s += x; return s; }
inline V16 vexp(V16 a) { for (float& x : a.v) x = exp_approx(x); return a; }
#endif

void silu_mul(float* g, const float* u, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {  // g / (1 + exp(-g)) * u
        const V16 x = vload(g + i), e = vexp(vmul(x, -1.f));
        alignas(64) float t[16], xs[16], es[16];
        vstore(xs, x);
        vstore(es, e);
        for (int j = 0; j < 16; ++j) t[j] = xs[j] / (1.0f + es[j]) * u[i + j];
        vstore(g + i, vload(t));
    }
    for (; i < n; ++i) g[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

void rms_norm(const float* x, const float* w, float* y, int n, float eps) {
    V16 acc = vzero();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const V16 v = vload(x + i);
        acc = vfmav(v, v, acc);
    }
    double sum = vreduce_add(acc);
    for (; i < n; ++i) sum += double(x[i]) * x[i];
    const float scale = 1.0f / std::sqrt(float(sum / n) + eps);
    for (i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void gelu_mul(float* g, const float* u, int n, const float* table) {
    uint16_t h[256];
    for (int i0 = 0; i0 < n; i0 += 256) {
        const int m = std::min(256, n - i0);
        to_f16(g + i0, h, m);
        for (int i = 0; i < m; ++i) {
            const float x = g[i0 + i];
            const float y = x <= -10.f ? 0.f : x >= 10.f ? x : table[h[i]];
            g[i0 + i] = y * u[i0 + i];
        }
    }
}

// Softmax over keys [first, last] of scores `sc` (scaled here), weights rounded to f16; the
// rest of [0, end) set to 0. Sixteen lanes at a time, the ragged ends one by one.
inline void softmax_row(float* sc, int first, int last, int end, float scale) {
    const int n = last + 1 - first, n16 = n / 16 * 16;
    float* x = sc + first;
    V16 vm = vload(x);  // n >= 16 whenever it is used
    float mx = -INFINITY;
    for (int j = 0; j < n16; j += 16) vm = vmax(vm, vload(x + j));
    if (n16) mx = vreduce_max(vm);
    for (int j = n16; j < n; ++j) mx = std::max(mx, x[j]);
    mx *= scale;  // scale > 0: the max of the scaled scores
    V16 vs = vzero();
    for (int j = 0; j < n16; j += 16) {
        const V16 e = vexp(vsub(vmul(vload(x + j), scale), mx));
        vstore(x + j, e);
        vs = vadd(vs, e);
    }
    float sum = vreduce_add(vs);
    for (int j = n16; j < n; ++j) sum += (x[j] = exp_approx(x[j] * scale - mx));
    const float inv = 1.0f / sum;
    for (int j = 0; j < n16; j += 16) vstore(x + j, vmul(vload(x + j), inv));
    for (int j = n16; j < n; ++j) x[j] *= inv;
    round_to_f16(x, n);
    std::fill(sc, sc + first, 0.f);
    std::fill(sc + last + 1, sc + end, 0.f);
}

// R (at most four) query rows i0 .. i0 + R - 1: their scores against tiles of 16 keys (each
// tile of each key dimension one f16 load, shared by the rows), the softmax of each row,
// then the weighted values, four 16-wide slices of the value per pass with every
// accumulator in a register. Nothing is copied out of the cache.
template <int R>
void attend_rows(const AttentionRows& a, int i0, int lo, int S_pad, float* scores) {
    const int D = a.head_dim, G = a.group;
    auto row_ptr = [&](auto* base, int stride, int i) { return base + size_t(i / G) * stride + size_t(i % G) * D; };
    alignas(64) float q[R][kMaxHeadDim];
    for (int r = 0; r < R; ++r) {
        std::copy_n(row_ptr(a.q, a.q_stride, i0 + r), D, q[r]);
        round_to_f16(q[r], D);
    }
    // Keys [lo, lo + s_end) cover these rows; tiles may read up to 15 keys past them (kt_stride allows it).
    const int s_end = a.pos[(i0 + R - 1) / G] + 1 - lo, s_pad = (s_end + kTile - 1) / kTile * kTile;
    for (int j0 = 0; j0 < s_pad; j0 += kTile) {
        V16 acc[R];
        for (V16& v : acc) v = vzero();
        const uint16_t* kcol = a.kt + lo + j0;
        for (int d = 0; d < D; ++d) {
            const V16 k = vload_f16(kcol + size_t(d) * a.kt_stride);
            for (int r = 0; r < R; ++r) acc[r] = vfma(k, q[r][d], acc[r]);
        }
        for (int r = 0; r < R; ++r) vstore(scores + size_t(r) * S_pad + j0, acc[r]);
    }
    for (int r = 0; r < R; ++r) {  // weights outside a row's keys are 0
        const int p = a.pos[(i0 + r) / G];
        const int first = a.window > 0 ? std::max(0, p - a.window + 1) - lo : 0;
        softmax_row(scores + size_t(r) * S_pad, first, p - lo, s_pad, a.scale);
    }
    for (int d0 = 0; d0 < D; d0 += 4 * kTile) {
        const int nt = std::min(4, (D - d0) / kTile);
        V16 acc[R][4];
        for (auto& row : acc)
            for (V16& v : row) v = vzero();
        for (int j = 0; j < s_end; ++j) {
            const uint16_t* vrow = a.v + size_t(lo + j) * a.v_stride + d0;
            V16 v[4];
            for (int t = 0; t < 4; ++t) v[t] = t < nt ? vload_f16(vrow + t * kTile) : vzero();
            for (int r = 0; r < R; ++r) {
                const float w = scores[size_t(r) * S_pad + j];
                for (int t = 0; t < 4; ++t) acc[r][t] = vfma(v[t], w, acc[r][t]);
            }
        }
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < nt; ++t) vstore(row_ptr(a.out, a.out_stride, i0 + r) + d0 + t * kTile, acc[r][t]);
    }
}

void attend(const AttentionRows& a, AttentionScratch& s) {
    const int n_rows = a.n * a.group;
    const int lo = a.window > 0 ? std::max(0, a.pos[0] - a.window + 1) : 0;  // first key any row sees
    const int S_pad = (a.pos[a.n - 1] + 1 - lo + kTile - 1) / kTile * kTile;
    s.scores.resize(size_t(kRows) * S_pad);
    for (int i0 = 0; i0 < n_rows; i0 += kRows) {
        switch (std::min(kRows, n_rows - i0)) {
            case 1: attend_rows<1>(a, i0, lo, S_pad, s.scores.data()); break;
            case 2: attend_rows<2>(a, i0, lo, S_pad, s.scores.data()); break;
            case 3: attend_rows<3>(a, i0, lo, S_pad, s.scores.data()); break;
            default: attend_rows<4>(a, i0, lo, S_pad, s.scores.data()); break;
        }
    }
}

constexpr VectorOps kOps{attend, to_f16, silu_mul, rms_norm, gelu_mul};

}  // namespace
}  // namespace kt

// CPUID probe. Compiled with no ISA flags: it must run on any x86-64.
#include "kernels.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace kt {
namespace {

constexpr int ARCH_REQ_XCOMP_PERM = 0x1023;
constexpr int XFEATURE_XTILEDATA = 18;

uint64_t xgetbv0() {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t(hi) << 32) | lo;
}

CpuFeatures probe() {
    CpuFeatures f;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    bool osxsave = c & (1u << 27);
    bool os_amx = false;
    f.fma = c & (1u << 12);
    f.f16c = c & (1u << 29);
    if (osxsave) {
        uint64_t xcr0 = xgetbv0();
        f.os_avx = (xcr0 & 0x6) == 0x6;                 // XMM + YMM state
        f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0; // opmask + ZMM state
        os_amx = (xcr0 & (3u << 17)) == (3u << 17);      // TILECFG + TILEDATA state
    }
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = f.os_avx && (b & (1u << 5));
    f.avx512f = f.os_avx512 && (b & (1u << 16));
    f.avx512bw = f.avx512f && (b & (1u << 30));
    f.avx512vl = f.avx512f && (b & (1u << 31));
    f.avx512vnni = f.avx512f && (c & (1u << 11));
    f.amx_bf16 = os_amx && (d & (1u << 22));
    f.amx_tile = os_amx && (d & (1u << 24));
    f.amx_int8 = os_amx && (d & (1u << 25));
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512bf16 = f.avx512f && (a & (1u << 5));
    if (f.amx_tile)  // Linux hands out AMX tile state only on request
        f.amx_permitted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = probe();
    return f;
}

bool isa_supported(Isa isa) {
    const CpuFeatures& f = cpu_features();
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2: return f.avx2 && f.fma && f.f16c;
        case Isa::avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.fma && f.f16c;
        case Isa::amx: return isa_supported(Isa::avx512) && f.amx_tile && f.amx_bf16 && f.amx_permitted;
    }
    return false;
}

Isa best_isa() {
    if (isa_supported(Isa::amx)) return Isa::amx;
    if (isa_supported(Isa::avx512)) return Isa::avx512;
    if (isa_supported(Isa::avx2)) return Isa::avx2;
    return Isa::scalar;
}

const char* isa_name(Isa isa) {
    static const char* names[] = {"scalar", "avx2", "avx512", "amx"};
    return names[int(isa)];
}

bool parse_isa(const std::string& name, Isa* out) {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::amx})
        if (name == isa_name(isa)) { *out = isa; return true; }
    return false;
}

}  // namespace kt

// Host-side page-id check for plan(): one read of the caller's Int32Array, optionally copying it into the
// plan's pinned staging in the same pass. Unsigned, a negative id is larger than any valid one, so one
// maximum finds both faults. AVX2 where the CPU has it (64 KB of ids in about 0.9 us, against 2 us for
// the WebAssembly scan, which must first copy them into its memory, plus 1 us for the staging copy).
#include <immintrin.h>

#include "flashinfer_ts.h"

namespace {

template <bool COPY>
__attribute__((target("avx2"))) uint32_t max_u32_avx2(const int32_t* a, int64_t n, int32_t* dst) {
  __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {  // four independent maxima keep the loads in flight
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 8));
    const __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 16));
    const __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i + 24));
    m0 = _mm256_max_epu32(m0, x0), m1 = _mm256_max_epu32(m1, x1);
    m2 = _mm256_max_epu32(m2, x2), m3 = _mm256_max_epu32(m3, x3);
    if constexpr (COPY) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), x0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 8), x1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), x2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 24), x3);
    }
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_max_epu32(_mm256_max_epu32(m0, m1),
                                                                         _mm256_max_epu32(m2, m3)));
  uint32_t m = 0;
  for (uint32_t x : lanes) m = x > m ? x : m;
  for (; i < n; i++) {
    m = uint32_t(a[i]) > m ? uint32_t(a[i]) : m;
    if constexpr (COPY) dst[i] = a[i];
  }
  return m;
}

uint32_t max_u32(const int32_t* a, int64_t n, int32_t* dst) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    m = uint32_t(a[i]) > m ? uint32_t(a[i]) : m;
    if (dst) dst[i] = a[i];
  }
  return m;
}

}  // namespace

extern "C" int32_t fi_host_index_max(const int32_t* a, int64_t n, int32_t* dst, int64_t* out) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (n <= 0) {
    *out = -1;
    return FI_OK;
  }
  if (!avx2) *out = int64_t(max_u32(a, n, dst));
  else *out = int64_t(dst ? max_u32_avx2<true>(a, n, dst) : max_u32_avx2<false>(a, n, nullptr));
  return FI_OK;
}

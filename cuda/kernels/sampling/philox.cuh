// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): a counter-based
// generator, so every (seed, offset, row, element) names its own random numbers and any kernel,
// pass or CUDA-graph replay can regenerate them without carrying state.
#pragma once
#include <stdint.h>

namespace fi {
namespace sampling {

struct U32x4 {
  uint32_t x, y, z, w;
};

__device__ __forceinline__ U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const uint32_t lo0 = 0xD2511F53u * c.x, hi0 = __umulhi(0xD2511F53u, c.x);
    const uint32_t lo1 = 0xCD9E8D57u * c.z, hi1 = __umulhi(0xCD9E8D57u, c.z);
    c = U32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// A uniform in the open interval (0, 1) from the top 24 bits.
__device__ __forceinline__ float to_unit(uint32_t x) {
  return (float(x >> 8) + 0.5f) * 5.9604644775390625e-8f;
}

// Streams: what the four counter words mean. Word 3 carries the stream tag in its top byte so the
// per-element noise, per-row scalars and speculative draws never share numbers.
enum Stream : uint32_t { kElementNoise = 0, kRowScalars = 1, kResidualNoise = 2, kGroupNoise = 3 };

struct RngKey {
  uint32_t k0, k1;    // seed
  uint32_t off_lo, off_hi;
  uint32_t row;
};

__device__ __forceinline__ RngKey make_key(uint64_t seed, uint64_t offset, uint32_t row) {
  return RngKey{uint32_t(seed), uint32_t(seed >> 32), uint32_t(offset), uint32_t(offset >> 32), row};
}

// Four uniforms for group `group` (elements 4*group .. 4*group+3) of a stream.
__device__ __forceinline__ U32x4 philox_group(const RngKey& k, uint32_t group, uint32_t stream) {
  return philox4x32_10(U32x4{group, k.row, k.off_lo, (k.off_hi & 0x00FFFFFFu) ^ (stream << 24)}, k.k0,
                       k.k1);
}

__device__ __forceinline__ uint32_t pick(const U32x4& r, int j) {
  return j == 0 ? r.x : j == 1 ? r.y : j == 2 ? r.z : r.w;
}

}  // namespace sampling
}  // namespace fi

// extern "C" entry points for RMSNorm, fused add + RMSNorm and LayerNorm.
#include <initializer_list>

#include "../kernels/norm.cuh"
#include "dispatch.h"

namespace fi {
namespace {

// Registers hold at most 16 vectors a thread and 1024 threads a block: 16 * 1024 * 8 elements.
constexpr int kMaxItems = 16;

struct NormLaunch {
  int items;
  int threads;
};

NormLaunch plan_norm(int nvec) {
  int items = 1;
  while (items < kMaxItems && nvec > items * 256) items *= 2;
  int threads = (nvec + items - 1) / items;
  threads = ((threads + 31) / 32) * 32;
  return {items, threads};
}

// Calls launch.template operator()<VEC, ITEMS>() for the run-time vec and items.
template <typename F>
int32_t with_vec_items(int vec, int items, F&& launch) {
#define FI_ITEMS_CASES(V)                                       \
  switch (items) {                                              \
    case 1: return launch.template operator()<V, 1>();          \
    case 2: return launch.template operator()<V, 2>();          \
    case 4: return launch.template operator()<V, 4>();          \
    case 8: return launch.template operator()<V, 8>();          \
    default: return launch.template operator()<V, 16>();        \
  }
  switch (vec) {
    case 8: FI_ITEMS_CASES(8)
    case 4: FI_ITEMS_CASES(4)
    case 2: FI_ITEMS_CASES(2)
    default: FI_ITEMS_CASES(1)
  }
#undef FI_ITEMS_CASES
}

int32_t check_norm_size(int rows, int hidden, int vec) {
  if (rows < 0 || hidden <= 0)
    return set_error(FI_ERR_INVALID_ARGUMENT, "norm: rows %d and hidden %d must be positive", rows, hidden);
  if (hidden / vec > kMaxItems * 1024)
    return set_error(FI_ERR_UNSUPPORTED, "norm: hidden size %d is larger than %d", hidden,
                     kMaxItems * 1024 * vec);
  return FI_OK;
}

}  // namespace
}  // namespace fi

using namespace fi;

extern "C" {

int32_t fi_rmsnorm(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride, uint64_t weight,
                   int32_t rows, int32_t hidden, float eps, int32_t kind, int32_t dtype,
                   uint64_t stream) {
  FI_GUARD_BEGIN
  const int vec = vector_width(2, {out, x, weight}, {hidden, out_stride, x_stride});
  if (int32_t st = check_norm_size(rows, hidden, vec)) return st;
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      if (kind == 0)
        rmsnorm_kernel<T, V, I, 0><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride, as_ptr<const T>(weight), s);
      else
        rmsnorm_kernel<T, V, I, 1><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride, as_ptr<const T>(weight), s);
      FI_CHECK_LAUNCH("rmsnorm");
      return FI_OK;
    });
  });
  FI_GUARD_END
}

int32_t fi_fused_add_rmsnorm(uint64_t x, int64_t x_stride, uint64_t residual, int64_t residual_stride,
                             uint64_t weight, int32_t rows, int32_t hidden, float eps, int32_t kind,
                             int32_t dtype, uint64_t stream) {
  FI_GUARD_BEGIN
  const int vec = vector_width(2, {x, residual, weight}, {hidden, x_stride, residual_stride});
  if (int32_t st = check_norm_size(rows, hidden, vec)) return st;
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      if (kind == 0)
        fused_add_rmsnorm_kernel<T, V, I, 0><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(x), x_stride, as_ptr<T>(residual), residual_stride, as_ptr<const T>(weight), s);
      else
        fused_add_rmsnorm_kernel<T, V, I, 1><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(x), x_stride, as_ptr<T>(residual), residual_stride, as_ptr<const T>(weight), s);
      FI_CHECK_LAUNCH("fused_add_rmsnorm");
      return FI_OK;
    });
  });
  FI_GUARD_END
}

int32_t fi_layernorm(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride, uint64_t gamma,
                     uint64_t beta, int32_t rows, int32_t hidden, float eps, int32_t dtype,
                     int32_t weight_dtype, uint64_t stream) {
  FI_GUARD_BEGIN
  const int vec = vector_width(2, {out, x}, {hidden, out_stride, x_stride});
  if (int32_t st = check_norm_size(rows, hidden, vec)) return st;
  if (weight_dtype != FI_F32 && weight_dtype != dtype)
    return set_error(FI_ERR_UNSUPPORTED, "layernorm: weight dtype %d must be f32 or the input's",
                     weight_dtype);
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      if (weight_dtype == FI_F32)
        layernorm_kernel<T, float, V, I><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride, as_ptr<const float>(gamma),
            as_ptr<const float>(beta), s);
      else
        layernorm_kernel<T, T, V, I><<<rows, l.threads, 0, as_stream(stream)>>>(
            as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride, as_ptr<const T>(gamma),
            as_ptr<const T>(beta), s);
      FI_CHECK_LAUNCH("layernorm");
      return FI_OK;
    });
  });
  FI_GUARD_END
}

}  // extern "C"

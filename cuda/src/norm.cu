// extern "C" entry points for RMSNorm, fused add + RMSNorm and LayerNorm.
#include <initializer_list>
#include <tuple>

#include "../kernels/norm.cuh"
#include "dispatch.h"

namespace fi {
namespace {

// The register path: ITEMS vectors a thread, at most 4, and at most 1024 threads a block. Two vectors a
// thread keep enough loads in flight while leaving room for a full SM of threads (about 31 registers);
// wider rows than 4 * 1024 vectors take the wide kernels (items = 0 below).
constexpr int kMaxThreads = 1024;

struct NormLaunch {
  int items;  // 0: the wide (streaming) kernel
  int threads;
};

NormLaunch plan_norm(int nvec) {
  int items;
  if (nvec <= 256) items = 1;
  else if (nvec <= 2 * kMaxThreads) items = 2;
  else if (nvec <= 4 * kMaxThreads) items = 4;
  else return {0, kMaxThreads};
  int threads = (nvec + items - 1) / items;
  threads = ((threads + 31) / 32) * 32;
  return {items, threads};
}

// Calls launch.template operator()<VEC, ITEMS>() for the run-time vec and items (0: wide kernel).
template <typename F>
int32_t with_vec_items(int vec, int items, F&& launch) {
#define FI_ITEMS_CASES(V)                                       \
  switch (items) {                                              \
    case 0: return launch.template operator()<V, 0>();          \
    case 1: return launch.template operator()<V, 1>();          \
    case 2: return launch.template operator()<V, 2>();          \
    default: return launch.template operator()<V, 4>();         \
  }
  switch (vec) {
    case 8: FI_ITEMS_CASES(8)
    case 4: FI_ITEMS_CASES(4)
    case 2: FI_ITEMS_CASES(2)
    default: FI_ITEMS_CASES(1)
  }
#undef FI_ITEMS_CASES
}

int32_t check_norm_size(int rows, int hidden) {
  if (rows < 0 || hidden <= 0)
    return set_error(FI_ERR_INVALID_ARGUMENT, "norm: rows %d and hidden %d must be positive", rows, hidden);
  return FI_OK;
}

// Launches kernel over `rows` blocks with a tuple of arguments (with PDL, see dispatch.h).
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), int rows, int threads, uint64_t stream,
                   const std::tuple<Args...>& args) {
  std::apply([&](auto... a) { launch(kernel, dim3(rows), dim3(threads), 0, as_stream(stream), a...); }, args);
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
  if (int32_t st = check_norm_size(rows, hidden)) return st;
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      auto args = std::make_tuple(as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride,
                                  as_ptr<const T>(weight), s);
      if constexpr (I == 0)
        launch_kernel(kind == 0 ? rmsnorm_wide_kernel<T, V, 0> : rmsnorm_wide_kernel<T, V, 1>, rows, l.threads, stream, args);
      else
        launch_kernel(kind == 0 ? rmsnorm_kernel<T, V, I, 0> : rmsnorm_kernel<T, V, I, 1>, rows, l.threads, stream, args);
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
  if (int32_t st = check_norm_size(rows, hidden)) return st;
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      auto args = std::make_tuple(as_ptr<T>(x), x_stride, as_ptr<T>(residual), residual_stride,
                                  as_ptr<const T>(weight), s);
      if constexpr (I == 0)
        launch_kernel(kind == 0 ? fused_add_rmsnorm_wide_kernel<T, V, 0> : fused_add_rmsnorm_wide_kernel<T, V, 1>,
                      rows, l.threads, stream, args);
      else
        launch_kernel(kind == 0 ? fused_add_rmsnorm_kernel<T, V, I, 0> : fused_add_rmsnorm_kernel<T, V, I, 1>,
                      rows, l.threads, stream, args);
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
  if (int32_t st = check_norm_size(rows, hidden)) return st;
  if (weight_dtype != FI_F32 && weight_dtype != dtype)
    return set_error(FI_ERR_UNSUPPORTED, "layernorm: weight dtype %d must be f32 or the input's",
                     weight_dtype);
  if (rows == 0) return FI_OK;
  const NormLaunch l = plan_norm(hidden / vec);
  const NormShape s{hidden, hidden / vec, eps};
  return FI_DISPATCH_HALF(dtype, T, {
    return with_vec_items(vec, l.items, [&]<int V, int I>() -> int32_t {
      auto launch_w = [&]<typename W>(W*) {
        auto args = std::make_tuple(as_ptr<T>(out), out_stride, as_ptr<const T>(x), x_stride,
                                    as_ptr<const W>(gamma), as_ptr<const W>(beta), s);
        if constexpr (I == 0) launch_kernel(layernorm_wide_kernel<T, W, V>, rows, l.threads, stream, args);
        else launch_kernel(layernorm_kernel<T, W, V, I>, rows, l.threads, stream, args);
      };
      if (weight_dtype == FI_F32) launch_w(static_cast<float*>(nullptr));
      else launch_w(static_cast<T*>(nullptr));
      FI_CHECK_LAUNCH("layernorm");
      return FI_OK;
    });
  });
  FI_GUARD_END
}

}  // extern "C"

// extern "C" entry point for the gated activations (SiLU, GELU, GELU-tanh and mul).
#include <initializer_list>

#include "../kernels/activation.cuh"
#include "dispatch.h"

using namespace fi;

namespace {
template <typename T, int V>
int32_t launch_act(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride, int rows, int d,
                   int kind, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t units = int64_t(rows) * (d / V);
  const unsigned blocks = unsigned((units + kThreads - 1) / kThreads);
  switch (kind) {
    case kSilu:
      launch(act_and_mul_kernel<T, V, kSilu>, dim3(blocks), dim3(kThreads), 0, stream, as_ptr<T>(out),
             out_stride, as_ptr<const T>(x), x_stride, int64_t(rows), d);
      break;
    case kGelu:
      launch(act_and_mul_kernel<T, V, kGelu>, dim3(blocks), dim3(kThreads), 0, stream, as_ptr<T>(out),
             out_stride, as_ptr<const T>(x), x_stride, int64_t(rows), d);
      break;
    default:
      launch(act_and_mul_kernel<T, V, kGeluTanh>, dim3(blocks), dim3(kThreads), 0, stream, as_ptr<T>(out),
             out_stride, as_ptr<const T>(x), x_stride, int64_t(rows), d);
  }
  FI_CHECK_LAUNCH("act_and_mul");
  return FI_OK;
}
}  // namespace

extern "C" int32_t fi_act_and_mul(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride,
                                  int32_t rows, int32_t d, int32_t kind, int32_t dtype,
                                  uint64_t stream) {
  FI_GUARD_BEGIN
  if (rows < 0 || d <= 0 || kind < 0 || kind > 2)
    return set_error(FI_ERR_INVALID_ARGUMENT, "act_and_mul: rows %d, d %d, kind %d", rows, d, kind);
  if (rows == 0) return FI_OK;
  const int vec = vector_width(2, {out, x}, {d, out_stride, x_stride});
  return FI_DISPATCH_HALF(dtype, T, {
    switch (vec) {
      case 8: return launch_act<T, 8>(out, out_stride, x, x_stride, rows, d, kind, as_stream(stream));
      case 4: return launch_act<T, 4>(out, out_stride, x, x_stride, rows, d, kind, as_stream(stream));
      case 2: return launch_act<T, 2>(out, out_stride, x, x_stride, rows, d, kind, as_stream(stream));
      default: return launch_act<T, 1>(out, out_stride, x, x_stride, rows, d, kind, as_stream(stream));
    }
  });
  FI_GUARD_END
}

// box_iou on the CPU: one pass over the [M, N] output, the arithmetic of common/box_iou_math.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

// Branch-free selects (NaN-propagating min/max, clamp) only if-convert, and so vectorise, when
// floating-point traps may be assumed off; the arithmetic and its rounding are unchanged.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/box_iou_checks.h"
#include "common/box_iou_math.h"

namespace maskrcnn_fast {
namespace {

// Flat output elements [begin, end) (row-major [M, N]), row segment by row segment: element
// (i, j) is boxes1[i] against boxes2[j]. The inner loop vectorises over j.
template <typename T, typename acc_t>
C10_ALWAYS_INLINE void iou_rows(const T* __restrict__ b1, const T* __restrict__ b2,
                                acc_t* __restrict__ out, int64_t N, int64_t begin,
                                int64_t end) {
  int64_t k = begin;
  while (k < end) {
    const int64_t i = k / N;
    const int64_t j0 = k - i * N;
    const int64_t j1 = std::min<int64_t>(N, j0 + (end - k));
    const IouBox<acc_t> a = iou_box<T, acc_t>(b1 + i * 4);
    acc_t* o = out + i * N;
    for (int64_t j = j0; j < j1; ++j) o[j] = pair_iou<T, acc_t>(a, iou_box<T, acc_t>(b2 + j * 4));
    k += j1 - j0;
  }
}

// float gets AVX2 / AVX-512 clones picked at load time; every clone rounds identically.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void iou_rows_f32(const float* b1, const float* b2, float* out, int64_t N, int64_t begin,
                  int64_t end) {
  iou_rows<float, float>(b1, b2, out, N, begin, end);
}

template <typename T, typename acc_t>
void iou_dispatch(const T* b1, const T* b2, acc_t* out, int64_t N, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    iou_rows_f32(b1, b2, out, N, begin, end);
  } else {
    iou_rows<T, acc_t>(b1, b2, out, N, begin, end);
  }
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou(boxes1, boxes2);
  const at::Tensor b1 = boxes1.contiguous();
  const at::Tensor b2 = boxes2.contiguous();
  const int64_t M = b1.size(0), N = b2.size(0);
  const auto out_type = at::toOpMathType(b1.scalar_type());
  at::Tensor out = at::empty({M, N}, b1.options().dtype(out_type));
  if (M == 0 || N == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b1.scalar_type(), "box_iou", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* p1 = b1.const_data_ptr<scalar_t>();
    const scalar_t* p2 = b2.const_data_ptr<scalar_t>();
    acc_t* po = out.mutable_data_ptr<acc_t>();
    // Well under 1 ns per pair once vectorised: chunks of 256k pairs (~0.1 ms) amortise the
    // thread hand-off and keep small problems on one thread.
    at::parallel_for(0, M * N, 262144, [&](int64_t begin, int64_t end) {
      iou_dispatch<scalar_t, acc_t>(p1, p2, po, N, begin, end);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(maskrcnn_fast, CPU, m) { m.impl("box_iou", &box_iou_cpu); }

}  // namespace maskrcnn_fast

#pragma GCC pop_options

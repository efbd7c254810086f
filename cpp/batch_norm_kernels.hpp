// darcyvae: the passes of the fused batch norm + ReLU (batch_norm.hpp) over
// rows of channels-innermost activations, compiled once per instruction set
// (batch_norm_kernels_generic.cpp, batch_norm_kernels_avx2.cpp, both
// including batch_norm_kernels.inc) and chosen at run time by
// batch_norm.cpp. Plain structs and function pointers only (as in
// darcy_kernels.hpp: the kernel objects must not instantiate templates).
#pragma once

#include <cstdint>

namespace darcyvae::detail {

// Rows summed in float before the block's sums are added to the double
// accumulators: short float sums keep the loops vectorised, the doubles keep
// the totals accurate over tens of thousands of rows.
constexpr std::int64_t kBatchNormRowBlock = 16;

// acc_a[j] += sum_rows (x - shift)[j], acc_b[j] += sum_rows (x - shift)[j]^2;
// part_a, part_b: scratch of `c` floats each.
using MomentsFn = void (*)(std::int64_t rows, std::int64_t c, const float* x, const float* shift,
                           float* part_a, float* part_b, double* acc_a, double* acc_b);
// y = max(x * scale + shift, 0) row by row.
using NormalizeFn = void (*)(std::int64_t rows, std::int64_t c, const float* x,
                             const float* scale, const float* shift, float* y);
// g = (y > 0 ? dy : 0): acc_a[j] += sum_rows g[j], acc_b[j] += sum_rows g (x - mean)[j].
using GradientSumsFn = void (*)(std::int64_t rows, std::int64_t c, const float* x, const float* y,
                                const float* dy, const float* mean, float* part_a, float* part_b,
                                double* acc_a, double* acc_b);
// dx = g a + ((x - mean) b + d) row by row, g as above.
using InputGradientFn = void (*)(std::int64_t rows, std::int64_t c, const float* x,
                                 const float* y, const float* dy, const float* mean,
                                 const float* a, const float* b, const float* d, float* dx);

struct BatchNormKernels {
  const char* isa;
  MomentsFn moments;
  NormalizeFn normalize;
  GradientSumsFn gradient_sums;
  InputGradientFn input_gradient;
};

BatchNormKernels batch_norm_kernels_generic();
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
BatchNormKernels batch_norm_kernels_avx2();
#endif

}  // namespace darcyvae::detail

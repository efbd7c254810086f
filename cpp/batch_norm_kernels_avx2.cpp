// The fused batch norm + ReLU passes for x86-64 with AVX2 and FMA (this file alone is
// built with -mavx2 -mfma; batch_norm.cpp calls it only when the CPU has both).
#define DARCYVAE_ISA avx2
#include "batch_norm_kernels.inc"

namespace darcyvae::detail {

BatchNormKernels batch_norm_kernels_avx2() {
  return {"avx2", &avx2::moments, &avx2::normalize, &avx2::gradient_sums, &avx2::input_gradient};
}

}  // namespace darcyvae::detail

// The fused batch norm + ReLU passes for the baseline instruction set of the build.
#define DARCYVAE_ISA generic
#include "batch_norm_kernels.inc"

namespace darcyvae::detail {

BatchNormKernels batch_norm_kernels_generic() {
  return {"generic", &generic::moments, &generic::normalize, &generic::gradient_sums, &generic::input_gradient};
}

}  // namespace darcyvae::detail

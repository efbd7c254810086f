// The member-batched convolution kernels for the baseline instruction set of the build.
#define DARCYVAE_ISA generic
#include "conv_kernels.inc"

namespace darcyvae::detail {

ConvKernels conv_kernels_generic() {
  return {"generic", &generic::forward_image, &generic::backward_data_image,
          &generic::backward_weight_image};
}

}  // namespace darcyvae::detail

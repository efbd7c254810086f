// The member-batched convolution kernels for x86-64 with AVX2 and FMA (this
// file alone is built with -mavx2 -mfma; conv.cpp calls it only when the CPU
// has both).
#define DARCYVAE_ISA avx2
#include "conv_kernels.inc"

namespace darcyvae::detail {

ConvKernels conv_kernels_avx2() {
  return {"avx2", &avx2::forward_image, &avx2::backward_data_image,
          &avx2::backward_weight_image};
}

}  // namespace darcyvae::detail

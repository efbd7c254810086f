// The Darcy kernels for x86-64 with AVX2 and FMA (this file alone is built
// with -mavx2 -mfma; darcy.cpp calls it only when the CPU has both).
#define DARCYVAE_ISA avx2
#include "darcy_kernels.inc"

namespace darcyvae::detail {

Kernels kernels_avx2() {
  return {"avx2", &avx2::run_group, &avx2::coefficients_scalar, &avx2::velocities_scalar};
}

}  // namespace darcyvae::detail

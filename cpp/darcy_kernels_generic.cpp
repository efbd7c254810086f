// The Darcy kernels for the baseline instruction set of the build.
#define DARCYVAE_ISA generic
#include "darcy_kernels.inc"

namespace darcyvae::detail {

Kernels kernels_generic() {
  return {"generic", &generic::run_group, &generic::coefficients_scalar,
          &generic::velocities_scalar};
}

}  // namespace darcyvae::detail

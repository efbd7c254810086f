// darcyvae: whether the AVX2+FMA copies of the kernels (darcy, conv,
// batch_norm; built when DARCYVAE_HAVE_AVX2_KERNELS is defined) can run on
// this CPU. Each capability's driver selects its kernel table with it.
#pragma once

namespace darcyvae::detail {

inline bool avx2_kernels_available() {
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace darcyvae::detail

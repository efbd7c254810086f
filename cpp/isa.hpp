// darcyvae: whether the AVX2+FMA copies of the kernels (darcy, conv,
// batch_norm; built when DARCYVAE_HAVE_AVX2_KERNELS is defined) can run on
// this CPU, and the choice a driver makes for its `isa` argument. Included
// by the drivers only (never by a kernel object built with -mavx2).
#pragma once

#include <stdexcept>
#include <string>

namespace darcyvae::detail {

inline bool avx2_kernels_available() {
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// Whether to run the AVX2 kernels for `isa`: "auto" (when available),
// "avx2" (required) or "generic" (never). Anything else, or "avx2" where it
// is not available, throws std::invalid_argument("<who>: ...").
inline bool use_avx2_kernels(const std::string& isa, const char* who) {
  const std::string prefix = std::string(who) + ": ";
  if (isa != "auto" && isa != "avx2" && isa != "generic")
    throw std::invalid_argument(prefix + "isa must be 'auto', 'avx2' or 'generic'; got '" + isa +
                                "'");
  if (isa == "generic") return false;
  const bool have = avx2_kernels_available();
  if (isa == "avx2" && !have)
    throw std::invalid_argument(
        prefix + "isa 'avx2' is not available (not built in, or the CPU lacks AVX2/FMA)");
  return have;
}

}  // namespace darcyvae::detail

// darcyvae: fused training-mode batch normalisation + ReLU over channels-
// innermost activations (batch_norm.hpp): the per-channel arithmetic in
// double, the passes over the rows in batch_norm_kernels.inc.
#include "batch_norm.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "batch_norm_kernels.hpp"
#include "isa.hpp"

namespace darcyvae {
namespace {

using detail::BatchNormKernels;

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("batch_norm: " + what);
}

BatchNormKernels select(const std::string& isa) {
  [[maybe_unused]] const bool avx2 = detail::use_avx2_kernels(isa, "batch_norm");
#if defined(DARCYVAE_HAVE_AVX2_KERNELS)
  if (avx2) return detail::batch_norm_kernels_avx2();
#endif
  return detail::batch_norm_kernels_generic();
}

double inverse_sd(float var, double eps) {
  return 1.0 / std::sqrt(static_cast<double>(var) + eps);
}

// Per-channel sums of a pass: two double accumulators and two float scratch rows.
struct Sums {
  explicit Sums(std::size_t c) : a(c, 0.0), b(c, 0.0), part_a(c), part_b(c) {}
  std::vector<double> a, b;
  std::vector<float> part_a, part_b;
};

}  // namespace

void check_batch_norm_shape(const BatchNormShape& s, double eps) {
  if (s.rows < 2)
    fail("need at least 2 rows (values per channel) in training mode; got " +
         std::to_string(s.rows));
  if (s.channels < 1) fail("need at least 1 channel; got " + std::to_string(s.channels));
  if (!(eps > 0.0) || !std::isfinite(eps)) fail("eps must be finite and > 0");
}

std::string batch_norm_isa(const std::string& isa) { return select(isa).isa; }

void batch_norm_relu_forward(const BatchNormShape& s, const float* x, const float* gamma,
                             const float* beta, double eps, float* y, float* mean, float* var,
                             const std::string& isa) {
  check_batch_norm_shape(s, eps);
  const BatchNormKernels k = select(isa);
  const std::size_t c = static_cast<std::size_t>(s.channels);
  const double m = static_cast<double>(s.rows);
  // Moments of x shifted by its first row: one pass, and no cancellation as
  // long as the shift lies within the data.
  const float* first = x;
  Sums sums(c);
  k.moments(s.rows, s.channels, x, first, sums.part_a.data(), sums.part_b.data(), sums.a.data(),
            sums.b.data());
  std::vector<float> scale(c), shift(c);
  for (std::size_t j = 0; j < c; ++j) {
    const double dm = sums.a[j] / m;
    const double mu = static_cast<double>(first[j]) + dm;
    mean[j] = static_cast<float>(mu);
    var[j] = static_cast<float>(std::max(sums.b[j] / m - dm * dm, 0.0));
    const double a = static_cast<double>(gamma[j]) * inverse_sd(var[j], eps);
    scale[j] = static_cast<float>(a);
    shift[j] = static_cast<float>(static_cast<double>(beta[j]) - mu * a);
  }
  k.normalize(s.rows, s.channels, x, scale.data(), shift.data(), y);
}

void batch_norm_relu_backward(const BatchNormShape& s, const float* x, const float* y,
                              const float* dy, const float* gamma, const float* mean,
                              const float* var, double eps, float* dx, float* dgamma,
                              float* dbeta, const std::string& isa) {
  check_batch_norm_shape(s, eps);
  const BatchNormKernels k = select(isa);
  const std::size_t c = static_cast<std::size_t>(s.channels);
  const double m = static_cast<double>(s.rows);
  // g = dy where ReLU passed (y > 0), else 0: sums of g and of g (x - mean).
  Sums sums(c);
  k.gradient_sums(s.rows, s.channels, x, y, dy, mean, sums.part_a.data(), sums.part_b.data(),
                  sums.a.data(), sums.b.data());
  // dx = gamma invstd (g - mean(g) - (x - mean) invstd^2 mean(g (x - mean)))
  //    = g a + (x - mean) b + d per channel.
  std::vector<float> a(c), b(c), d(c);
  for (std::size_t j = 0; j < c; ++j) {
    const double inv = inverse_sd(var[j], eps);
    const double aj = static_cast<double>(gamma[j]) * inv;
    const double bj = -aj * inv * inv * sums.b[j] / m;
    a[j] = static_cast<float>(aj);
    b[j] = static_cast<float>(bj);
    d[j] = static_cast<float>(-aj * sums.a[j] / m);
    dgamma[j] = static_cast<float>(sums.b[j] * inv);
    dbeta[j] = static_cast<float>(sums.a[j]);
  }
  k.input_gradient(s.rows, s.channels, x, y, dy, mean, a.data(), b.data(), d.data(), dx);
}

}  // namespace darcyvae

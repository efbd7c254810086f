// darcyvae: the members' Gaussian reconstruction term (reconstruction.hpp).
#include "reconstruction.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace darcyvae {
namespace {

constexpr double kLog2Pi = 1.8378770664093454835606594728112;  // log(2 pi)

// The five axes (K, B, C, H, W), outermost first in the order of `strides`
// (largest magnitude first; ties keep the axis order), so that the innermost
// loop runs along the smallest stride.
std::array<int, 5> memory_order(const Strides5& strides) {
  std::array<int, 5> order{0, 1, 2, 3, 4};
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return std::abs(strides[a]) > std::abs(strides[b]);
  });
  return order;
}

Index offset(const Index* idx, const Strides5& strides) {
  Index o = 0;
  for (int a = 0; a < 5; ++a) o += idx[a] * strides[a];
  return o;
}

// Calls row(idx) for every index of the four outer axes of `order` (idx[inner]
// = 0), outermost axis slowest; row runs along the innermost axis itself.
template <class Row>
void for_each_row(const Index (&n)[5], const std::array<int, 5>& order, Row&& row) {
  Index idx[5] = {0, 0, 0, 0, 0};
  const Index rows = n[order[0]] * n[order[1]] * n[order[2]] * n[order[3]];
  for (Index r = 0; r < rows; ++r) {
    row(static_cast<const Index*>(idx));
    for (int a = 3; a >= 0; --a) {
      const int axis = order[a];
      if (++idx[axis] < n[axis]) break;
      idx[axis] = 0;
    }
  }
}

// What both passes share: the sizes, e^(-s) per (k, i, j) in double, and the
// strides of the (K, H, W) and (K, B) arrays as (K, B, C, H, W) views.
struct Pass {
  Index n[5];
  std::array<int, 5> order;
  std::vector<double> inv_var;  // e^(-s), (K, H, W)
  Strides5 pixel, sample;       // strides of (K, H, W) and (K, B) arrays

  Pass(const NllShape& s, const Strides5& mean_strides, const float* logvar)
      : n{s.members, s.batch, s.channels, s.height, s.width},
        order(memory_order(mean_strides)),
        inv_var(static_cast<std::size_t>(s.members * s.height * s.width)),
        pixel{s.height * s.width, 0, 0, s.width, 1},
        sample{s.batch, 1, 0, 0, 0} {
    for (std::size_t i = 0; i < inv_var.size(); ++i) inv_var[i] = std::exp(-double(logvar[i]));
  }
  int inner() const { return order[4]; }
};

}  // namespace

void check_nll_shape(const NllShape& s) {
  if (s.members < 1 || s.batch < 1 || s.channels < 1 || s.height < 1 || s.width < 1)
    throw std::invalid_argument(
        "reconstruction_nll: members, batch, channels, height and width must be >= 1; got (" +
        std::to_string(s.members) + ", " + std::to_string(s.batch) + ", " +
        std::to_string(s.channels) + ", " + std::to_string(s.height) + ", " +
        std::to_string(s.width) + ")");
}

void reconstruction_nll_forward(const NllShape& s, const float* y, const Strides5& ys,
                                const float* mean, const Strides5& ms, const float* logvar,
                                float* out) {
  check_nll_shape(s);
  const Pass p(s, ms, logvar);
  std::vector<double> acc(static_cast<std::size_t>(s.members * s.batch), 0.0);
  const int in = p.inner();
  const Index len = p.n[in], sy = ys[in], sm = ms[in], sv = p.pixel[in], sa = p.sample[in];
  for_each_row(p.n, p.order, [&](const Index* idx) {
    const float* yr = y + offset(idx, ys);
    const float* mr = mean + offset(idx, ms);
    const double* vr = p.inv_var.data() + offset(idx, p.pixel);
    double* ar = acc.data() + offset(idx, p.sample);
    for (Index t = 0; t < len; ++t) {
      const double d = double(yr[t * sy]) - double(mr[t * sm]);
      ar[t * sa] += d * d * vr[t * sv];
    }
  });
  // the constant and log-variance terms: C (H W log 2pi + sum_ij s_kij) per member
  const Index pixels = s.height * s.width;
  for (Index k = 0; k < s.members; ++k) {
    const double log_det =
        std::accumulate(logvar + k * pixels, logvar + (k + 1) * pixels, 0.0);
    const double constant = double(s.channels) * (double(pixels) * kLog2Pi + log_det);
    for (Index b = 0; b < s.batch; ++b)
      out[k * s.batch + b] = static_cast<float>(0.5 * (constant + acc[k * s.batch + b]));
  }
}

void reconstruction_nll_backward(const NllShape& s, const float* y, const Strides5& ys,
                                 const float* mean, const Strides5& ms, const float* logvar,
                                 const float* grad, float* dmean, const Strides5& ds,
                                 float* dlogvar) {
  check_nll_shape(s);
  const Pass p(s, ms, logvar);
  std::vector<double> acc(p.inv_var.size(), 0.0);  // sum_{b,c} g (y - mu)^2 e^(-s)
  const int in = p.inner();
  const Index len = p.n[in], sy = ys[in], sm = ms[in], sd = ds[in], sv = p.pixel[in],
              sa = p.sample[in];
  for_each_row(p.n, p.order, [&](const Index* idx) {
    const float* yr = y + offset(idx, ys);
    const float* mr = mean + offset(idx, ms);
    float* dr = dmean + offset(idx, ds);
    const double* vr = p.inv_var.data() + offset(idx, p.pixel);
    double* ar = acc.data() + offset(idx, p.pixel);
    const float* gr = grad + offset(idx, p.sample);
    for (Index t = 0; t < len; ++t) {
      const double d = double(mr[t * sm]) - double(yr[t * sy]);
      const double g = gr[t * sa], v = vr[t * sv];
      dr[t * sd] = static_cast<float>(g * d * v);
      ar[t * sv] += g * d * d * v;
    }
  });
  const Index pixels = s.height * s.width;
  for (Index k = 0; k < s.members; ++k) {
    const double g_sum = std::accumulate(grad + k * s.batch, grad + (k + 1) * s.batch, 0.0);
    for (Index i = 0; i < pixels; ++i)
      dlogvar[k * pixels + i] =
          static_cast<float>(0.5 * (double(s.channels) * g_sum - acc[k * pixels + i]));
  }
}

}  // namespace darcyvae

// darcyvae: bounded Nelder-Mead (nelder_mead.hpp). Each line follows one of
// scipy's array expressions; the coefficients are scipy's (rho 1, chi 2,
// psi 1/2, sigma 1/2) written out as its expressions round them, and this
// file is built without contracting a * b + c into an FMA, as numpy computes.
#include "nelder_mead.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace darcyvae {
namespace {

using Row = std::vector<double>;

// np.clip(x, lower, upper) elementwise (NaN stays NaN).
void clip(Row& x, const double* lower, const double* upper) {
  for (std::size_t j = 0; j < x.size(); ++j) x[j] = std::min(std::max(x[j], lower[j]), upper[j]);
}

// numpy's ordering of floats: NaN after everything.
bool less(double a, double b) { return a < b || (std::isnan(b) && !std::isnan(a)); }

// np.argsort(fsim) then np.take on both: numpy sorts short arrays by
// insertion, which keeps equal values in order (a stable sort).
void sort_simplex(std::vector<Row>& sim, Row& fsim) {
  std::vector<std::size_t> ind(fsim.size());
  std::iota(ind.begin(), ind.end(), 0);
  std::stable_sort(ind.begin(), ind.end(),
                   [&](std::size_t a, std::size_t b) { return less(fsim[a], fsim[b]); });
  std::vector<Row> s(sim.size());
  Row fs(fsim.size());
  for (std::size_t i = 0; i < ind.size(); ++i) {
    s[i] = sim[ind[i]];
    fs[i] = fsim[ind[i]];
  }
  sim.swap(s);
  fsim.swap(fs);
}

// Thrown by the counted objective once maxfev evaluations are spent
// (scipy's _MaxFuncCallError).
struct Spent {};

}  // namespace

NelderMeadResult nelder_mead(const std::function<double(const double*)>& f,
                             const double* simplex, int n, const double* lower,
                             const double* upper, double xatol, double fatol, int maxfev,
                             int maxiter) {
  if (n < 1) throw std::invalid_argument("nelder_mead: n must be >= 1");
  const auto N = static_cast<std::size_t>(n);
  for (std::size_t j = 0; j < N; ++j)
    if (lower[j] > upper[j]) throw std::invalid_argument("nelder_mead: lower bound above upper");
  const double inf = std::numeric_limits<double>::infinity();
  double maxfun = maxfev > 0 ? maxfev : inf;
  double maxit = maxiter > 0 ? maxiter : inf;
  if (maxiter <= 0 && maxfev <= 0) maxfun = maxit = 200.0 * n;
  else if (maxiter <= 0) maxit = inf;  // maxfev given: no iteration limit
  else if (maxfev <= 0) maxfun = inf;  // maxiter given: no evaluation limit

  // the initial simplex, reflected into the box where above it, then clipped
  std::vector<Row> sim(N + 1, Row(N));
  for (std::size_t i = 0; i <= N; ++i)
    for (std::size_t j = 0; j < N; ++j) {
      const double v = simplex[i * N + j];
      sim[i][j] = v > upper[j] ? 2 * upper[j] - v : v;
    }
  for (Row& r : sim) clip(r, lower, upper);

  NelderMeadResult out;
  auto func = [&](const Row& x) {
    if (out.nfev >= maxfun) throw Spent{};
    ++out.nfev;
    const Row copy = x;
    return f(copy.data());
  };
  Row fsim(N + 1, inf);
  try {
    for (std::size_t k = 0; k <= N; ++k) fsim[k] = func(sim[k]);
  } catch (const Spent&) {
  }
  sort_simplex(sim, fsim);

  const double rho = 1, chi = 2, psi = 0.5, sigma = 0.5;
  int iterations = 1;
  while (out.nfev < maxfun && iterations < maxit) {
    try {
      bool x_done = true, f_done = true;  // np.max(...) <= tol, NaN failing it
      for (std::size_t i = 1; i <= N; ++i) {
        for (std::size_t j = 0; j < N; ++j)
          if (!(std::abs(sim[i][j] - sim[0][j]) <= xatol)) x_done = false;
        if (!(std::abs(fsim[0] - fsim[i]) <= fatol)) f_done = false;
      }
      if (x_done && f_done) break;
      Row xbar(N, 0.0);  // np.add.reduce(sim[:-1], 0) / N: rows added in order
      for (std::size_t j = 0; j < N; ++j) {
        double s = sim[0][j];
        for (std::size_t i = 1; i < N; ++i) s += sim[i][j];
        xbar[j] = s / static_cast<double>(N);
      }
      const Row& worst = sim[N];
      auto point = [&](double a, double b) {  // a * xbar - b * worst, clipped
        Row x(N);
        for (std::size_t j = 0; j < N; ++j) x[j] = a * xbar[j] - b * worst[j];
        clip(x, lower, upper);
        return x;
      };
      const Row xr = point(1 + rho, rho);
      const double fxr = func(xr);
      bool shrink = false;
      if (fxr < fsim[0]) {
        const Row xe = point(1 + rho * chi, rho * chi);
        const double fxe = func(xe);
        if (fxe < fxr) {
          sim[N] = xe;
          fsim[N] = fxe;
        } else {
          sim[N] = xr;
          fsim[N] = fxr;
        }
      } else if (fxr < fsim[N - 1]) {
        sim[N] = xr;
        fsim[N] = fxr;
      } else if (fxr < fsim[N]) {  // outside contraction
        const Row xc = point(1 + psi * rho, psi * rho);
        const double fxc = func(xc);
        if (fxc <= fxr) {
          sim[N] = xc;
          fsim[N] = fxc;
        } else {
          shrink = true;
        }
      } else {  // inside contraction: (1 - psi) xbar + psi worst
        Row xcc(N);
        for (std::size_t j = 0; j < N; ++j) xcc[j] = (1 - psi) * xbar[j] + psi * worst[j];
        clip(xcc, lower, upper);
        const double fxcc = func(xcc);
        if (fxcc < fsim[N]) {
          sim[N] = xcc;
          fsim[N] = fxcc;
        } else {
          shrink = true;
        }
      }
      if (shrink) {
        for (std::size_t i = 1; i <= N; ++i) {
          for (std::size_t j = 0; j < N; ++j)
            sim[i][j] = sim[0][j] + sigma * (sim[i][j] - sim[0][j]);
          clip(sim[i], lower, upper);
          fsim[i] = func(sim[i]);
        }
      }
      ++iterations;
    } catch (const Spent&) {
    }
    sort_simplex(sim, fsim);
  }
  out.x = sim[0];
  out.fun = fsim[0];
  for (double v : fsim) {  // np.min: NaN if any value is NaN
    if (std::isnan(v)) {
      out.fun = v;
      break;
    }
    out.fun = std::min(out.fun, v);
  }
  out.nit = iterations;
  out.success = !(out.nfev >= maxfun) && !(iterations >= maxit);
  return out;
}

}  // namespace darcyvae

// darcyvae: the bounded Nelder-Mead minimiser of the S_KL search
// (docs/scores.md §5), step for step scipy.optimize.minimize's
// method="Nelder-Mead" with bounds and an initial simplex (scipy 1.17's
// _minimize_neldermead, adaptive=False): the same trial points, the same
// order of evaluations, the same stopping rules, so the same objective gives
// the same result, without a trip through Python per evaluation.
#pragma once

#include <functional>
#include <vector>

namespace darcyvae {

struct NelderMeadResult {
  std::vector<double> x;  // the best vertex
  double fun = 0.0;       // the smallest value of the final simplex (NaN if any is NaN)
  int nfev = 0;           // evaluations
  int nit = 0;            // iterations
  bool success = false;   // stopped by xatol and fatol (not by maxfev or maxiter)
};

// Minimises f over the box [lower, upper] (n values each; +-inf allowed)
// from `simplex`, n + 1 rows of n values. f gets a copy of the point.
// maxfev, maxiter <= 0: scipy's defaults (200 n both when neither is given;
// with only maxfev, no iteration limit).
NelderMeadResult nelder_mead(const std::function<double(const double*)>& f,
                             const double* simplex, int n, const double* lower,
                             const double* upper, double xatol, double fatol, int maxfev,
                             int maxiter);

}  // namespace darcyvae

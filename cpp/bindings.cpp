// darcyvae._core: the only file that includes pybind11. Each capability of
// the C++ core (darcy, kle, knn_kl, conv, batch_norm, reconstruction) gets one bind_* function below;
// the Python modules darcyvae.darcy, darcyvae.kle, darcyvae.metrics,
// darcyvae.ensemble.convolutions, .batch_norm and .reconstruction validate inputs and are the documented API.
// Long calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/functional.h>
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "batch_norm.hpp"
#include "conv.hpp"
#include "darcy.hpp"
#include "index.hpp"
#include "kle.hpp"
#include "knn_kl.hpp"
#include "parallel.hpp"
#include "reconstruction.hpp"

#define STRINGIFY(x) #x
#define MACRO_STRINGIFY(x) STRINGIFY(x)

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

void bind_parallel(py::module_& m) {
  m.def("resolve_threads", &darcyvae::resolve_threads, "threads"_a,
        "Number of worker threads used for `threads` (<= 0 means all cores; capped at "
        "max_threads()).");
  m.def("max_threads", &darcyvae::max_threads,
        "Largest number of worker threads any call uses: 4 x the hardware threads, in [4, 256].");
}

void bind_darcy(py::module_& m) {
  using darcyvae::DarcySolver;
  using Grid = py::array_t<double, py::array::c_style | py::array::forcecast>;
  auto as_grid = [](std::vector<double> v, int grid) {
    Grid a({grid, grid});
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
  };
  m.def(
      "darcy_source",
      [as_grid](int grid, double well_width, double rate) {
        return as_grid(darcyvae::darcy_source(grid, well_width, rate), grid);
      },
      "grid"_a, "well_width"_a, "rate"_a, "docs/data.md §1 well source f, shape (N, N); see darcyvae.darcy.source_term.");
  m.def(
      "darcy_gauge_weights",
      [as_grid](int grid) { return as_grid(darcyvae::darcy_gauge_weights(grid), grid); },
      "grid"_a, "Trapezoid weights of the zero-mean gauge, shape (N, N).");

  py::class_<DarcySolver>(m, "DarcySolver",
                          "Darcy solver for one (grid, scheme); use darcyvae.darcy.solve/solve_batch.")
      .def(py::init([](int grid, const std::string& scheme, int leaf_size, int block,
                       const std::string& isa, double check_tolerance,
                       double residual_tolerance) {
             return std::make_unique<DarcySolver>(grid, darcyvae::parse_darcy_scheme(scheme),
                                                  leaf_size, block,
                                                  darcyvae::parse_kernel_isa(isa),
                                                  check_tolerance, residual_tolerance);
           }),
           "grid"_a, "scheme"_a = "fd", "leaf_size"_a = 0, "block"_a = 0, "isa"_a = "auto",
           "check_tolerance"_a = 1e-10,
           "residual_tolerance"_a = darcyvae::kDefaultResidualTolerance)
      .def_property_readonly("grid", &DarcySolver::grid, "Nodes per side N.")
      .def_property_readonly(
          "scheme", [](const DarcySolver& s) { return darcyvae::darcy_scheme_name(s.scheme()); },
          "'fd' or 'fv'.")
      .def_property_readonly("isa", &DarcySolver::isa, "Kernel instruction set in use.")
      .def_property_readonly("lanes", &DarcySolver::lanes, "Samples factorised together.")
      .def_property_readonly("leaf_size", &DarcySolver::leaf_size, "Largest dense leaf region.")
      .def_property_readonly("block", &DarcySolver::block, "Panel width of the front factorisation.")
      .def_property_readonly("fronts", &DarcySolver::fronts, "Fronts in the separator tree.")
      .def_property_readonly("factor_flops", &DarcySolver::factor_flops,
                             "Dense flops of one sample's factorisation (model).")
      .def_property_readonly("fallbacks", &DarcySolver::fallbacks,
                             "Samples re-solved with partial pivoting so far.")
      .def_property_readonly("residual_tolerance", &DarcySolver::residual_tolerance,
                             "Bordered relative residual above which a sample is re-solved.")
      .def_property_readonly("pooled_workspaces", &DarcySolver::pooled_workspaces,
                             "Per-thread workspaces kept for the next call (<= hardware threads).")
      .def(
          "solve_into",
          [](const DarcySolver& s, Grid k, Grid source, py::array out, int threads,
             std::optional<py::array_t<double>> bordered) {
            const int N = s.grid();
            if (k.ndim() != 3 || k.shape(1) != N || k.shape(2) != N)
              throw std::invalid_argument("DarcySolver.solve_into: k must have shape (n, N, N)");
            if (source.ndim() != 2 || source.shape(0) != N || source.shape(1) != N)
              throw std::invalid_argument("DarcySolver.solve_into: source must have shape (N, N)");
            const auto n = static_cast<std::size_t>(k.shape(0));
            const bool f32 = out.dtype().is(py::dtype::of<float>());
            if (!f32 && !out.dtype().is(py::dtype::of<double>()))
              throw std::invalid_argument("DarcySolver.solve_into: out must be float32 or float64");
            if (out.ndim() != 4 || static_cast<std::size_t>(out.shape(0)) != n ||
                out.shape(1) != 3 || out.shape(2) != N || out.shape(3) != N ||
                !(out.flags() & py::array::c_style) || !out.writeable())
              throw std::invalid_argument(
                  "DarcySolver.solve_into: out must be a writeable C-contiguous (n, 3, N, N) array");
            if (bordered && (bordered->ndim() != 1 ||
                             static_cast<std::size_t>(bordered->shape(0)) != n ||
                             !bordered->writeable() || !(bordered->flags() & py::array::c_style)))
              throw std::invalid_argument(
                  "DarcySolver.solve_into: bordered_residual must be a writeable float64 (n,) array");
            py::array_t<double> lambda(static_cast<py::ssize_t>(n));
            py::array_t<double> residual(static_cast<py::ssize_t>(n));
            double* bp = bordered ? bordered->mutable_data() : nullptr;
            const double* kp = k.data();
            const double* sp = source.data();
            void* op = out.mutable_data();
            double* lp = lambda.mutable_data();
            double* rp = residual.mutable_data();
            {
              py::gil_scoped_release release;
              if (f32)
                s.solve(kp, n, sp, static_cast<float*>(op), lp, rp, threads, bp);
              else
                s.solve(kp, n, sp, static_cast<double*>(op), lp, rp, threads, bp);
            }
            return py::make_tuple(lambda, residual);
          },
          "k"_a, "source"_a, "out"_a, "threads"_a = 0, "bordered_residual"_a = py::none(),
          "Solve n samples into out (n, 3, N, N); returns (lambda, relative_residual) and fills "
          "bordered_residual (n,) with ||A p + lambda w - b|| / ||b|| when given.")
      .def(
          "profile",
          [](const DarcySolver& s, Grid k, Grid source, int repeats) {
            const int N = s.grid();
            if (k.ndim() != 3 || k.shape(1) != N || k.shape(2) != N || k.shape(0) < 1)
              throw std::invalid_argument("DarcySolver.profile: k must have shape (n, N, N), n >= 1");
            if (source.ndim() != 2 || source.shape(0) != N || source.shape(1) != N)
              throw std::invalid_argument("DarcySolver.profile: source must have shape (N, N)");
            darcyvae::DarcyStageTimes t;
            {
              py::gil_scoped_release release;
              t = s.profile(k.data(), static_cast<std::size_t>(k.shape(0)), source.data(), repeats);
            }
            py::dict d;
            d["assembly"] = t.assembly;
            d["factorization"] = t.factorization;
            d["solve"] = t.solve;
            d["velocity"] = t.velocity;
            d["check"] = t.check;
            d["total"] = t.total;
            return d;
          },
          "k"_a, "source"_a, "repeats"_a = 20,
          "Median seconds per sample of each stage on this thread (one group of lanes samples).");
}

darcyvae::KleProblem kle_problem(int grid, const std::string& kernel, double length_x,
                                 double length_y, double variance) {
  darcyvae::KleProblem pr;
  pr.grid = grid;
  pr.kernel = darcyvae::parse_kle_kernel(kernel);
  pr.length_x = length_x;
  pr.length_y = length_y;
  pr.variance = variance;
  return pr;
}

void bind_kle(py::module_& m) {
  m.def(
      "kle_solve",
      [](int grid, const std::string& kernel, double length_x, double length_y, double variance,
         int n_modes, const std::string& method, const std::string& matvec, double tol,
         int basis_size, int threads) {
        darcyvae::KleProblem pr = kle_problem(grid, kernel, length_x, length_y, variance);
        darcyvae::KleSolveOptions opt;
        opt.n_modes = n_modes;
        opt.method = darcyvae::parse_kle_method(method);
        opt.matvec = darcyvae::parse_kle_matvec(matvec);
        opt.tol = tol;
        opt.basis_size = basis_size;
        opt.threads = threads;
        darcyvae::KleSolveResult r;
        {
          py::gil_scoped_release release;
          r = darcyvae::kle_solve(pr, opt);
        }
        py::dict out;
        out["eigenvalues"] = py::cast(std::move(r.eigenvalues));
        out["modes"] = py::cast(std::move(r.modes));
        out["residuals"] = py::cast(std::move(r.residuals));
        out["trace"] = r.trace;
        out["matvecs"] = r.matvecs;
        out["restarts"] = r.restarts;
        out["rounds"] = r.rounds;
        out["blocks"] = r.blocks;
        out["dense_blocks"] = r.dense_blocks;
        out["clusters"] = r.clusters;
        out["matvec"] = r.matvec;
        return out;
      },
      "grid"_a, "kernel"_a, "length_x"_a, "length_y"_a, "variance"_a, "n_modes"_a,
      "method"_a = "auto", "matvec"_a = "auto", "tol"_a = 1e-12, "basis_size"_a = 0,
      "threads"_a = 0,
      "Top KLE eigenpairs with the docs/data.md §2 basis rules (use darcyvae.kle.kle_basis).");
  m.def(
      "kle_matvec",
      [](int grid, const std::string& kernel, double length_x, double length_y, double variance,
         py::array_t<double, py::array::c_style | py::array::forcecast> x, int threads) {
        darcyvae::KleProblem pr = kle_problem(grid, kernel, length_x, length_y, variance);
        pr.validate();
        const py::ssize_t n = static_cast<py::ssize_t>(pr.size());
        if ((x.ndim() != 1 && x.ndim() != 2) || x.shape(x.ndim() - 1) != n)
          throw std::invalid_argument("kle_matvec: x must have shape (grid**2,) or (k, grid**2)");
        py::array_t<double> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        const std::size_t k = x.ndim() == 1 ? 1 : static_cast<std::size_t>(x.shape(0));
        const double* src = x.data();
        double* dst = y.mutable_data();
        {
          py::gil_scoped_release release;
          const int nw = darcyvae::workers_for(k, threads);
          std::vector<std::unique_ptr<darcyvae::KleCovarianceFFT>> ops;
          for (int w = 0; w < nw; ++w) ops.push_back(std::make_unique<darcyvae::KleCovarianceFFT>(pr));
          darcyvae::parallel_for(k, threads, [&](std::size_t i, int w) {
            ops[static_cast<std::size_t>(w)]->apply(src + i * n, dst + i * n);
          });
        }
        const double* out = y.data();
        for (std::size_t i = 0; i < k * static_cast<std::size_t>(n); ++i)
          if (!std::isfinite(out[i]))
            throw std::invalid_argument(
                "kle_matvec: C x overflows double precision (x or the variance too large); "
                "scale x down");
        return y;
      },
      "grid"_a, "kernel"_a, "length_x"_a, "length_y"_a, "variance"_a, "x"_a, "threads"_a = 0,
      "Covariance product C x by FFT circulant embedding (use darcyvae.kle.covariance_matvec).");
}


void bind_knn_kl(py::module_& m) {
  using darcyvae::Index;
  using darcyvae::KDTree;
  using darcyvae::KLEstimator;
  using darcyvae::KLMethod;
  using Rows = py::array_t<double, py::array::c_style | py::array::forcecast>;
  using Ids = py::array_t<Index, py::array::c_style | py::array::forcecast>;
  auto check_rows = [](const Rows& a, Index d, const char* what) {
    if (a.ndim() != 2 || (d > 0 && a.shape(1) != d)) {
      throw std::invalid_argument(std::string(what) + " must be a 2-D array with " +
                                  (d > 0 ? std::to_string(d) : std::string("some")) + " columns");
    }
  };
  auto check_len = [](py::ssize_t len, Index want, const char* what) {
    if (len != want) {
      throw std::invalid_argument(std::string(what) + " must have length " + std::to_string(want));
    }
  };

  py::class_<KDTree>(m, "KDTree", "Exact KD-tree over a (n, d) array (see darcyvae.neighbors.KDTree).")
      .def(py::init([check_rows](const Rows& data, Index leaf_size) {
             check_rows(data, 0, "data");
             py::gil_scoped_release release;
             return std::make_unique<KDTree>(data.data(), data.shape(0), data.shape(1), leaf_size);
           }),
           "data"_a, "leaf_size"_a = KDTree::kDefaultLeafSize, "Build the tree (copies the data).")
      .def_property_readonly("n", &KDTree::size, "Number of points.")
      .def_property_readonly("d", &KDTree::dim, "Dimension.")
      .def_property_readonly("leaf_size", &KDTree::leaf_size, "Largest number of points in a leaf.")
      .def_property_readonly("depth", &KDTree::depth, "Depth of the deepest leaf.")
      .def_property_readonly("node_count", &KDTree::node_count, "Number of nodes.")
      .def(
          "query",
          [check_rows, check_len](const KDTree& t, const Rows& x, Index k,
                                  const std::optional<Ids>& exclude,
                                  const std::optional<Rows>& weights, int threads) {
            check_rows(x, t.dim(), "x");
            const Index nq = x.shape(0);
            if (exclude) check_len(exclude->size(), nq, "exclude");
            if (weights) check_len(weights->size(), t.dim(), "weights");
            if (k < 1 || k > t.size()) throw std::invalid_argument("k must be in [1, n]");
            py::array_t<double> dist({nq, k});
            py::array_t<Index> idx({nq, k});
            double* dp = dist.mutable_data();
            Index* ip = idx.mutable_data();
            {
              py::gil_scoped_release release;
              t.knn(x.data(), nq, k, exclude ? exclude->data() : nullptr,
                    weights ? weights->data() : nullptr, dp, ip, threads);
            }
            return py::make_tuple(dist, idx);
          },
          "x"_a, "k"_a, "exclude"_a = py::none(), "weights"_a = py::none(), "threads"_a = 1,
          "(distances, indices) of the k nearest points of each row of x.")
      .def(
          "count_within",
          [check_rows, check_len](const KDTree& t, const Rows& x, const Rows& radius,
                                  const std::optional<Ids>& exclude,
                                  const std::optional<Rows>& weights, int threads) {
            check_rows(x, t.dim(), "x");
            const Index nq = x.shape(0);
            check_len(radius.size(), nq, "radius");
            if (exclude) check_len(exclude->size(), nq, "exclude");
            if (weights) check_len(weights->size(), t.dim(), "weights");
            py::array_t<Index> count(nq);
            py::array_t<double> max_dist(nq);
            Index* cp = count.mutable_data();
            double* mp = max_dist.mutable_data();
            {
              py::gil_scoped_release release;
              t.count_within(x.data(), nq, radius.data(), exclude ? exclude->data() : nullptr,
                             weights ? weights->data() : nullptr, cp, mp, threads);
            }
            return py::make_tuple(count, max_dist);
          },
          "x"_a, "radius"_a, "exclude"_a = py::none(), "weights"_a = py::none(), "threads"_a = 1,
          "(counts, largest distances) of the points within radius (closed ball) of each row.");

  py::class_<KLEstimator>(m, "KLEstimator",
                          "Wang-Kulkarni-Verdu k-NN KL estimator (see darcyvae.metrics).")
      .def(py::init([check_rows](const Rows& x, Index k, const std::string& method,
                                 Index leaf_size, int threads) {
             check_rows(x, 0, "x");
             const KLMethod mm = darcyvae::parse_kl_method(method);
             py::gil_scoped_release release;
             return std::make_unique<KLEstimator>(x.data(), x.shape(0), x.shape(1), k, mm,
                                                  leaf_size, threads);
           }),
           "x"_a, "k"_a = 1, "method"_a = "adaptive",
           "leaf_size"_a = KDTree::kDefaultLeafSize, "threads"_a = 1,
           "Tree over the samples x of p and their rho_k.")
      .def_property_readonly("k", &KLEstimator::k, "Neighbour order k.")
      .def_property_readonly(
          "method",
          [](const KLEstimator& e) { return std::string(darcyvae::kl_method_name(e.method())); },
          "'fixed' or 'adaptive'.")
      .def_property_readonly(
          "rho", [](const KLEstimator& e) { return py::array_t<double>(py::cast(e.rho())); },
          "rho_k of every sample of p, in input order.")
      .def_property_readonly("tree", &KLEstimator::tree, py::return_value_policy::reference_internal,
                             "The tree over x.")
      .def(
          "divergence",
          [check_len](const KLEstimator& e, const KDTree& y, const std::optional<Rows>& scale,
                      const std::optional<Rows>& shift, const std::optional<Ids>& perm,
                      bool paired, double min_ratio, int threads) {
            const Index d = e.tree().dim();
            if (scale) check_len(scale->size(), d, "scale");
            if (shift) check_len(shift->size(), d, "shift");
            if (perm) check_len(perm->size(), d, "perm");
            if ((shift || perm) && !scale) throw std::invalid_argument("shift and perm need scale");
            darcyvae::KLValue v;
            {
              py::gil_scoped_release release;
              v = e.divergence(y, scale ? scale->data() : nullptr,
                               shift ? shift->data() : nullptr, perm ? perm->data() : nullptr,
                               paired, min_ratio, threads);
            }
            return py::make_tuple(v.value, v.zero_x, v.zero_y);
          },
          "y"_a, "scale"_a = py::none(), "shift"_a = py::none(), "perm"_a = py::none(),
          "paired"_a = false, "min_ratio"_a = 0.0, "threads"_a = 1,
          "(D, #samples with rho_k = 0, #samples with nu_k = 0 (unless min_ratio clips it); D is NaN "
          "when either is non-zero) against y, or y'_c = a_c (y_perm[c] - b_c).")
      .def(
          "minimize_divergence",
          [check_len](const KLEstimator& e, const KDTree& y, const Rows& a0, const Rows& b0,
                      const Rows& step, const Ids& perm, const Rows& simplex, double log_range,
                      double xatol, double fatol, int maxfev, bool paired, double min_ratio,
                      int threads) {
            const Index d = e.tree().dim();
            check_len(a0.size(), d, "a0");
            check_len(b0.size(), d, "b0");
            check_len(step.size(), d, "step");
            check_len(perm.size(), d, "perm");
            if (simplex.ndim() != 2 || simplex.shape(0) != 2 * d + 1 || simplex.shape(1) != 2 * d)
              throw std::invalid_argument("simplex must have shape (2d + 1, 2d) = (" +
                                          std::to_string(2 * d + 1) + ", " +
                                          std::to_string(2 * d) + ")");
            if (!(log_range > 0.0)) throw std::invalid_argument("log_range must be > 0");
            darcyvae::NelderMeadResult r;
            {
              py::gil_scoped_release release;
              r = darcyvae::minimize_divergence(e, y, a0.data(), b0.data(), step.data(),
                                                perm.data(), simplex.data(), log_range, xatol,
                                                fatol, maxfev, paired, min_ratio, threads);
            }
            return py::make_tuple(py::array_t<double>(py::cast(r.x)), r.fun, r.nfev, r.success);
          },
          "y"_a, "a0"_a, "b0"_a, "step"_a, "perm"_a, "simplex"_a, "log_range"_a, "xatol"_a,
          "fatol"_a, "maxfev"_a = 0, "paired"_a = false, "min_ratio"_a = 0.0, "threads"_a = 1,
          "(x, fun, nfev, success) of Nelder-Mead over p = (log-scales, shifts) of the divergence "
          "at a = a0 exp(p[:d]), b = b0 + p[d:] step (scipy's bounded Nelder-Mead, step for "
          "step).");

  m.def(
      "nelder_mead",
      [](const std::function<double(py::array_t<double>)>& fun, const Rows& simplex,
         const Rows& lower, const Rows& upper, double xatol, double fatol, int maxfev,
         int maxiter) {
        if (simplex.ndim() != 2 || simplex.shape(0) != simplex.shape(1) + 1)
          throw std::invalid_argument("simplex must have shape (n + 1, n)");
        const auto n = static_cast<Index>(simplex.shape(1));
        if (lower.size() != n || upper.size() != n)
          throw std::invalid_argument("lower and upper must have length n");
        auto f = [&](const double* x) {
          return fun(py::array_t<double>(n, x));
        };
        const darcyvae::NelderMeadResult r =
            darcyvae::nelder_mead(f, simplex.data(), static_cast<int>(n), lower.data(),
                                  upper.data(), xatol, fatol, maxfev, maxiter);
        return py::make_tuple(py::array_t<double>(py::cast(r.x)), r.fun, r.nfev, r.nit,
                              r.success);
      },
      "fun"_a, "simplex"_a, "lower"_a, "upper"_a, "xatol"_a, "fatol"_a, "maxfev"_a = 0,
      "maxiter"_a = 0,
      "(x, fun, nfev, nit, success): scipy's bounded Nelder-Mead from an initial simplex, "
      "step for step, on a Python function (the S_KL search runs it on the divergence in "
      "C++, KLEstimator.minimize_divergence).");

  m.def("digamma", &darcyvae::digamma, "x"_a, "The digamma function for x > 0 (NaN otherwise).");
}


// A float32 array taken as it is (the member kernels', the fused batch
// norm's and the reconstruction term's arguments): float32, `ndim`-d,
// C-contiguous unless `strided` (then any strides that are whole elements; an
// output must not overlap itself) and, for an output, writeable; anything
// else raises ValueError "<where>: <name> must ..." (never a silent copy,
// which would leave the caller's output unwritten).
struct FloatView {
  const float* data;
  float* mutable_data;
  std::vector<py::ssize_t> shape;
  std::vector<py::ssize_t> strides;  // in elements
  const char* begin;                 // the bytes the view can touch: [begin, end)
  const char* end;
};

// Whether no two elements of the view share memory: sorted by stride, each
// axis steps over everything the smaller ones span.
bool overlaps_itself(const FloatView& v) {
  std::vector<std::pair<py::ssize_t, py::ssize_t>> axes;  // (|stride|, size)
  for (std::size_t a = 0; a < v.shape.size(); ++a)
    if (v.shape[a] > 1) axes.emplace_back(std::abs(v.strides[a]), v.shape[a]);
  std::sort(axes.begin(), axes.end());
  py::ssize_t span = 1;
  for (const auto& [stride, size] : axes) {
    if (stride < span) return true;
    span = stride * size;
  }
  return false;
}

FloatView float_view(const py::array& a, const std::string& where, const char* name, int ndim,
                     bool out, bool strided = false) {
  const std::string what = where + ": " + name;
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::value_error(what + " must be float32; got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    throw py::value_error(what + " must be " + std::to_string(ndim) + "-d; got " +
                          std::to_string(a.ndim()) + " dimensions");
  if (!strided && !(a.flags() & py::array::c_style))
    throw py::value_error(what + " must be C-contiguous");
  if (out && !a.writeable()) throw py::value_error(what + " must be writeable");
  FloatView v;
  v.data = static_cast<const float*>(a.data());
  v.mutable_data = out ? static_cast<float*>(const_cast<void*>(a.data())) : nullptr;
  v.shape.assign(a.shape(), a.shape() + ndim);
  py::ssize_t lo = 0, hi = static_cast<py::ssize_t>(sizeof(float));
  for (int i = 0; i < ndim; ++i) {
    const py::ssize_t bytes = a.strides(i);
    if (bytes % static_cast<py::ssize_t>(sizeof(float)) != 0)
      throw py::value_error(what + " must have strides of whole elements");
    v.strides.push_back(bytes / static_cast<py::ssize_t>(sizeof(float)));
    const py::ssize_t reach = (v.shape[i] - 1) * bytes;
    (reach < 0 ? lo : hi) += reach;
  }
  v.begin = reinterpret_cast<const char*>(v.data) + lo;
  v.end = reinterpret_cast<const char*>(v.data) + hi;
  if (a.size() == 0) v.end = v.begin;
  if (out && strided && overlaps_itself(v)) throw py::value_error(what + " must not overlap itself");
  return v;
}

// Raises unless the output `out` shares no memory with the input `in`.
void check_apart(const FloatView& out, const FloatView& in, const std::string& where,
                 const char* what) {
  if (out.begin < in.end && in.begin < out.end && out.begin != out.end && in.begin != in.end)
    throw py::value_error(where + ": the output overlaps " + what);
}

// Runs fn without the GIL; the core's std::invalid_argument becomes ValueError.
template <class Fn>
void run_released(Fn&& fn) {
  try {
    py::gil_scoped_release release;
    fn();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// Member-batched convolutions (conv.hpp): 5-d float32 arrays (float_view).
void bind_conv(py::module_& m) {
  using darcyvae::ConvShape;
  using View = FloatView;
  auto view = [](const py::array& a, const char* name, bool out) {
    return float_view(a, "conv", name, 5, out);
  };
  auto apart = [](const View& out, const View& in, const char* what) {
    check_apart(out, in, "conv", what);
  };
  auto to_int = [](py::ssize_t v, const char* what) {
    if (v > static_cast<py::ssize_t>(1) << 30)
      throw py::value_error(std::string("conv: ") + what + " is too large");
    return static_cast<int>(v);
  };
  // (x-like: batch, hi, wi, ci, K), (w: kh, kw, ci, co, K), (y-like: batch, ho, wo, co, K)
  auto shape_of = [to_int](const View& x, const View& w, const View& y, int stride, int pad) {
    const auto& a = x.shape;
    const auto& k = w.shape;
    const auto& b = y.shape;
    if (k[2] != a[3] || k[3] != b[3] || a[4] != k[4] || b[4] != k[4] || a[0] != b[0])
      throw py::value_error(
          "conv: shapes do not fit: expected x (batch, hi, wi, ci, K), w (kh, kw, ci, co, K) "
          "and y (batch, ho, wo, co, K)");
    ConvShape s{};
    s.batch = to_int(a[0], "batch");
    s.hi = to_int(a[1], "hi");
    s.wi = to_int(a[2], "wi");
    s.ci = to_int(a[3], "ci");
    s.ho = to_int(b[1], "ho");
    s.wo = to_int(b[2], "wo");
    s.co = to_int(b[3], "co");
    s.kh = to_int(k[0], "kh");
    s.kw = to_int(k[1], "kw");
    s.lanes = to_int(k[4], "K");
    s.stride = stride;
    s.pad = pad;
    try {
      darcyvae::check_conv_shape(s);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
    return s;
  };
  auto run = [](auto&& fn) { run_released(fn); };
  // One binding per kernel: its arrays as (x-like, w, y-like) for shape_of, which
  // of them is the output, and the C++ call.
  using Kernel = void (*)(const ConvShape&, const float*, const float*, float*, int,
                          const std::string&);
  struct Spec {
    const char* name;
    const char* args[3];  // the Python argument names, the output last
    int x, w, y;          // positions of x-like, w and y-like among the three arrays
    Kernel kernel;
    const char* doc;
  };
  const Spec specs[] = {
      {"conv_forward", {"x", "w", "y"}, 0, 1, 2, &darcyvae::conv_forward,
       "y (batch, ho, wo, co, K) = conv(x (batch, hi, wi, ci, K), w (kh, kw, ci, co, K)), in "
       "place."},
      {"conv_backward_data", {"dy", "w", "dx"}, 2, 1, 0, &darcyvae::conv_backward_data,
       "dx (batch, hi, wi, ci, K) = the transposed convolution of dy (batch, ho, wo, co, K), in "
       "place."},
      {"conv_backward_weight", {"x", "dy", "dw"}, 0, 2, 1, &darcyvae::conv_backward_weight,
       "dw (kh, kw, ci, co, K) = the weight gradient of conv_forward, in place."},
  };
  for (const Spec& spec : specs) {
    m.def(
        spec.name,
        [view, apart, shape_of, run, spec](const py::array& a, const py::array& b,
                                           const py::array& out, int stride, int pad, int threads,
                                           const std::string& isa) {
          const View v[3] = {view(a, spec.args[0], false), view(b, spec.args[1], false),
                             view(out, spec.args[2], true)};
          apart(v[2], v[0], spec.args[0]);
          apart(v[2], v[1], spec.args[1]);
          const ConvShape s = shape_of(v[spec.x], v[spec.w], v[spec.y], stride, pad);
          run([&] { spec.kernel(s, v[0].data, v[1].data, v[2].mutable_data, threads, isa); });
        },
        py::arg(spec.args[0]), py::arg(spec.args[1]), py::arg(spec.args[2]), "stride"_a, "pad"_a,
        "threads"_a = 1, "isa"_a = "auto", spec.doc);
  }
  m.def("conv_isa", [](const std::string& isa) {
    try {
      return darcyvae::conv_isa(isa);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, "isa"_a = "auto", "Instruction set the convolution kernels run with for `isa`.");
}


// Fused training-mode batch normalisation + ReLU (batch_norm.hpp): x, y, dy,
// dx (rows, channels); gamma, beta, mean, var, dgamma, dbeta (channels,);
// float32 arrays as they are (float_view), outputs written in place.
void bind_batch_norm(py::module_& m) {
  const std::string where = "batch_norm_relu";
  auto shape_of = [where](const FloatView& x, std::initializer_list<const FloatView*> rows,
                          std::initializer_list<const FloatView*> chans) {
    for (const FloatView* v : rows)
      if (v->shape != x.shape)
        throw py::value_error(where + ": shapes do not fit: every (rows, channels) array must "
                                      "have x's shape");
    for (const FloatView* v : chans)
      if (v->shape[0] != x.shape[1])
        throw py::value_error(where + ": shapes do not fit: every per-channel array must have "
                                      "length channels = " + std::to_string(x.shape[1]));
    darcyvae::BatchNormShape s;
    s.rows = x.shape[0];
    s.channels = x.shape[1];
    return s;
  };
  m.def(
      "batch_norm_relu_forward",
      [where, shape_of](const py::array& x, const py::array& gamma, const py::array& beta,
                        double eps, const py::array& y, const py::array& mean,
                        const py::array& var, const std::string& isa) {
        const FloatView vx = float_view(x, where, "x", 2, false);
        const FloatView vg = float_view(gamma, where, "gamma", 1, false);
        const FloatView vb = float_view(beta, where, "beta", 1, false);
        const FloatView outs[3] = {float_view(y, where, "y", 2, true),
                                   float_view(mean, where, "mean", 1, true),
                                   float_view(var, where, "var", 1, true)};
        const auto s = shape_of(vx, {&outs[0]}, {&vg, &vb, &outs[1], &outs[2]});
        for (const FloatView& o : outs) {
          check_apart(o, vx, where, "x");
          check_apart(o, vg, where, "gamma");
          check_apart(o, vb, where, "beta");
        }
        check_apart(outs[0], outs[1], where, "mean");
        check_apart(outs[0], outs[2], where, "var");
        check_apart(outs[1], outs[2], where, "var");
        run_released([&] {
          darcyvae::batch_norm_relu_forward(s, vx.data, vg.data, vb.data, eps,
                                            outs[0].mutable_data, outs[1].mutable_data,
                                            outs[2].mutable_data, isa);
        });
      },
      "x"_a, "gamma"_a, "beta"_a, "eps"_a, "y"_a, "mean"_a, "var"_a, "isa"_a = "auto",
      "y = ReLU(BatchNorm(x)) in training mode over the rows of x (rows, channels); writes y, "
      "the batch mean and the biased batch variance of every channel in place.");
  m.def(
      "batch_norm_relu_backward",
      [where, shape_of](const py::array& x, const py::array& y, const py::array& dy,
                        const py::array& gamma, const py::array& mean, const py::array& var,
                        double eps, const py::array& dx, const py::array& dgamma,
                        const py::array& dbeta, const std::string& isa) {
        const FloatView ins[6] = {
            float_view(x, where, "x", 2, false),        float_view(y, where, "y", 2, false),
            float_view(dy, where, "dy", 2, false),      float_view(gamma, where, "gamma", 1, false),
            float_view(mean, where, "mean", 1, false),  float_view(var, where, "var", 1, false)};
        const char* names[6] = {"x", "y", "dy", "gamma", "mean", "var"};
        const FloatView outs[3] = {float_view(dx, where, "dx", 2, true),
                                   float_view(dgamma, where, "dgamma", 1, true),
                                   float_view(dbeta, where, "dbeta", 1, true)};
        const auto s = shape_of(ins[0], {&ins[1], &ins[2], &outs[0]},
                                {&ins[3], &ins[4], &ins[5], &outs[1], &outs[2]});
        for (const FloatView& o : outs)
          for (int i = 0; i < 6; ++i) check_apart(o, ins[i], where, names[i]);
        check_apart(outs[0], outs[1], where, "dgamma");
        check_apart(outs[0], outs[2], where, "dbeta");
        check_apart(outs[1], outs[2], where, "dbeta");
        run_released([&] {
          darcyvae::batch_norm_relu_backward(s, ins[0].data, ins[1].data, ins[2].data,
                                             ins[3].data, ins[4].data, ins[5].data, eps,
                                             outs[0].mutable_data, outs[1].mutable_data,
                                             outs[2].mutable_data, isa);
        });
      },
      "x"_a, "y"_a, "dy"_a, "gamma"_a, "mean"_a, "var"_a, "eps"_a, "dx"_a, "dgamma"_a,
      "dbeta"_a, "isa"_a = "auto",
      "Gradients of batch_norm_relu_forward for the output gradient dy: dx, dgamma and dbeta, "
      "in place (y: the forward output).");
  m.def("batch_norm_isa", [](const std::string& isa) {
    std::string out;
    run_released([&] { out = darcyvae::batch_norm_isa(isa); });
    return out;
  }, "isa"_a = "auto", "Instruction set the fused batch norm passes run with for `isa`.");
}

// The members' Gaussian reconstruction term (reconstruction.hpp): y, mean and
// dmean (K, B, C, H, W) with any strides; logvar and dlogvar (K, H, W), out
// and grad (K, B), C-contiguous; outputs written in place.
void bind_reconstruction(py::module_& m) {
  const std::string where = "reconstruction_nll";
  auto strides5 = [](const FloatView& v) {
    darcyvae::Strides5 st{};
    std::copy(v.strides.begin(), v.strides.end(), st.begin());
    return st;
  };
  // shape from y (K, B, C, H, W); every other array must fit it
  auto shape_of = [where](const FloatView& y, std::initializer_list<const FloatView*> fields,
                          std::initializer_list<const FloatView*> pixels,
                          std::initializer_list<const FloatView*> samples) {
    const auto& n = y.shape;
    for (const FloatView* v : fields)
      if (v->shape != n)
        throw py::value_error(where + ": shapes do not fit: mean (and dmean) must have y's "
                                      "shape (K, B, C, H, W)");
    for (const FloatView* v : pixels)
      if (v->shape != std::vector<py::ssize_t>{n[0], n[3], n[4]})
        throw py::value_error(where + ": shapes do not fit: logvar (and dlogvar) must have "
                                      "shape (K, H, W) = (" + std::to_string(n[0]) + ", " +
                              std::to_string(n[3]) + ", " + std::to_string(n[4]) + ")");
    for (const FloatView* v : samples)
      if (v->shape != std::vector<py::ssize_t>{n[0], n[1]})
        throw py::value_error(where + ": shapes do not fit: the per-sample arrays must have "
                                      "shape (K, B) = (" + std::to_string(n[0]) + ", " +
                              std::to_string(n[1]) + ")");
    darcyvae::NllShape s;
    s.members = n[0];
    s.batch = n[1];
    s.channels = n[2];
    s.height = n[3];
    s.width = n[4];
    return s;
  };
  m.def(
      "reconstruction_nll_forward",
      [where, strides5, shape_of](const py::array& y, const py::array& mean,
                                  const py::array& logvar, const py::array& out) {
        const FloatView vy = float_view(y, where, "y", 5, false, true);
        const FloatView vm = float_view(mean, where, "mean", 5, false, true);
        const FloatView vl = float_view(logvar, where, "logvar", 3, false);
        const FloatView vo = float_view(out, where, "out", 2, true);
        const auto s = shape_of(vy, {&vm}, {&vl}, {&vo});
        check_apart(vo, vy, where, "y");
        check_apart(vo, vm, where, "mean");
        check_apart(vo, vl, where, "logvar");
        run_released([&] {
          darcyvae::reconstruction_nll_forward(s, vy.data, strides5(vy), vm.data, strides5(vm),
                                               vl.data, vo.mutable_data);
        });
      },
      "y"_a, "mean"_a, "logvar"_a, "out"_a,
      "out[k, b] = 1/2 sum_{c,i,j} (log 2pi + s + (y - mean)^2 e^-s), s = logvar[k, i, j], in "
      "place (y, mean: (K, B, C, H, W), any strides).");
  m.def(
      "reconstruction_nll_backward",
      [where, strides5, shape_of](const py::array& y, const py::array& mean,
                                  const py::array& logvar, const py::array& grad,
                                  const py::array& dmean, const py::array& dlogvar) {
        const FloatView ins[4] = {float_view(y, where, "y", 5, false, true),
                                  float_view(mean, where, "mean", 5, false, true),
                                  float_view(logvar, where, "logvar", 3, false),
                                  float_view(grad, where, "grad", 2, false)};
        const char* names[4] = {"y", "mean", "logvar", "grad"};
        const FloatView outs[2] = {float_view(dmean, where, "dmean", 5, true, true),
                                   float_view(dlogvar, where, "dlogvar", 3, true)};
        const auto s = shape_of(ins[0], {&ins[1], &outs[0]}, {&ins[2], &outs[1]}, {&ins[3]});
        for (const FloatView& o : outs)
          for (int i = 0; i < 4; ++i) check_apart(o, ins[i], where, names[i]);
        check_apart(outs[0], outs[1], where, "dlogvar");
        run_released([&] {
          darcyvae::reconstruction_nll_backward(s, ins[0].data, strides5(ins[0]), ins[1].data,
                                                strides5(ins[1]), ins[2].data, ins[3].data,
                                                outs[0].mutable_data, strides5(outs[0]),
                                                outs[1].mutable_data);
        });
      },
      "y"_a, "mean"_a, "logvar"_a, "grad"_a, "dmean"_a, "dlogvar"_a,
      "Gradients of reconstruction_nll_forward for grad (K, B): dmean (any strides) and "
      "dlogvar (K, H, W), in place.");
}
}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "darcyvae C++/Eigen core (private; use darcyvae.darcy, darcyvae.kle, darcyvae.metrics, darcyvae.ensemble.convolutions, darcyvae.ensemble.batch_norm, darcyvae.ensemble.reconstruction).";
  bind_parallel(m);
  bind_darcy(m);
  bind_kle(m);
  bind_knn_kl(m);
  bind_conv(m);
  bind_batch_norm(m);
  bind_reconstruction(m);
#ifdef VERSION_INFO
  m.attr("__version__") = MACRO_STRINGIFY(VERSION_INFO);
#else
  m.attr("__version__") = "dev";
#endif
}

// darcyvae._core: the only file that includes pybind11. Each capability of
// the C++ core (darcy, kle, knn_kl) gets one bind_* function below; the
// Python modules darcyvae.darcy, darcyvae.kle and darcyvae.metrics validate
// inputs and are the documented API. Long calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "kle.hpp"
#include "parallel.hpp"

#define STRINGIFY(x) #x
#define MACRO_STRINGIFY(x) STRINGIFY(x)

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

void bind_parallel(py::module_& m) {
  m.def("resolve_threads", &darcyvae::resolve_threads, "threads"_a,
        "Number of worker threads used for `threads` (<= 0 means all cores).");
}

void bind_kle(py::module_& m) {
  m.def(
      "kle_solve",
      [](int grid, const std::string& kernel, double length_x, double length_y, double variance,
         int n_modes, const std::string& method, const std::string& matvec, double tol,
         int basis_size, int threads) {
        darcyvae::KleProblem pr;
        pr.grid = grid;
        pr.kernel = darcyvae::parse_kle_kernel(kernel);
        pr.length_x = length_x;
        pr.length_y = length_y;
        pr.variance = variance;
        darcyvae::KleSolveOptions opt;
        opt.n_modes = n_modes;
        opt.method = method;
        opt.matvec = matvec;
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
      "Top KLE eigenpairs with the SPEC 2 basis rules (use darcyvae.kle.kle_basis).");
  m.def(
      "kle_matvec",
      [](int grid, const std::string& kernel, double length_x, double length_y, double variance,
         py::array_t<double, py::array::c_style | py::array::forcecast> x, int threads) {
        darcyvae::KleProblem pr;
        pr.grid = grid;
        pr.kernel = darcyvae::parse_kle_kernel(kernel);
        pr.length_x = length_x;
        pr.length_y = length_y;
        pr.variance = variance;
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
        return y;
      },
      "grid"_a, "kernel"_a, "length_x"_a, "length_y"_a, "variance"_a, "x"_a, "threads"_a = 0,
      "Covariance product C x by FFT circulant embedding (use darcyvae.kle.covariance_matvec).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "darcyvae C++/Eigen core (private; use darcyvae.darcy, darcyvae.kle, darcyvae.metrics).";
  bind_parallel(m);
  bind_kle(m);
#ifdef VERSION_INFO
  m.attr("__version__") = MACRO_STRINGIFY(VERSION_INFO);
#else
  m.attr("__version__") = "dev";
#endif
}

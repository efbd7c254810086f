// darcyvae._core: the only file that includes pybind11. Each capability of
// the C++ core (darcy, kle, knn_kl) gets one bind_* function below; the
// Python modules darcyvae.darcy, darcyvae.kle and darcyvae.metrics validate
// inputs and are the documented API. Long calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

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

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "darcyvae C++/Eigen core (private; use darcyvae.darcy, darcyvae.kle, darcyvae.metrics).";
  bind_parallel(m);
#ifdef VERSION_INFO
  m.attr("__version__") = MACRO_STRINGIFY(VERSION_INFO);
#else
  m.attr("__version__") = "dev";
#endif
}

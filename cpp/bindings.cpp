// darcyvae._core: the only file that includes pybind11. Each capability of
// the C++ core (darcy, kle, knn_kl) gets one bind_* function below; the
// Python modules darcyvae.darcy, darcyvae.kle and darcyvae.metrics validate
// inputs and are the documented API. Long calls release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "knn_kl.hpp"
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
  auto method_of = [](const std::string& name) {
    if (name == "fixed") return KLMethod::fixed;
    if (name == "adaptive") return KLMethod::adaptive;
    throw std::invalid_argument("method must be 'fixed' or 'adaptive'");
  };

  py::class_<KDTree>(m, "KDTree", "Exact KD-tree over a (n, d) array (see darcyvae.metrics.KDTree).")
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
      .def(py::init([check_rows, method_of](const Rows& x, Index k, const std::string& method,
                                            Index leaf_size, int threads) {
             check_rows(x, 0, "x");
             const KLMethod mm = method_of(method);
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
          [](const KLEstimator& e) {
            return e.method() == KLMethod::fixed ? std::string("fixed") : std::string("adaptive");
          },
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
          "(D, #zero x-side, #zero y-side distances) against y, or y'_c = a_c (y_perm[c] - b_c).");

  m.def("digamma", &darcyvae::digamma, "x"_a, "The digamma function for x > 0 (NaN otherwise).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "darcyvae C++/Eigen core (private; use darcyvae.darcy, darcyvae.kle, darcyvae.metrics).";
  bind_parallel(m);
  bind_knn_kl(m);
#ifdef VERSION_INFO
  m.attr("__version__") = MACRO_STRINGIFY(VERSION_INFO);
#else
  m.attr("__version__") = "dev";
#endif
}

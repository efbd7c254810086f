// darcyvae: exact k-nearest-neighbour search (a KD-tree of our own) and the
// Wang-Kulkarni-Verdu k-NN estimators of the KL divergence (docs/scores.md §5a).
//
// KDTree holds a copy of n points of R^d (any d) reordered into leaf order.
// Queries return exact k-th neighbour distances and radius counts under the
// Euclidean distance or the per-axis weighted Euclidean distance
//   dist_w(q, p) = sqrt(sum_c (w_c (q_c - p_c))^2),
// which lets one fixed tree over Z answer queries against a o (Z - b):
//   ||x - a o (z - b)|| = dist_|a|(x / a + b, z).
// A query may exclude one point by its original index (self-queries, paired
// samples); points at distance zero are NOT skipped, so duplicates are seen.
//
// KLEstimator holds the samples x of p (tree, rho_k of every sample) and
// evaluates the fixed-k estimator or the adaptive (epsilon) estimator
// against any tree over samples of q, optionally through the affine map above.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "index.hpp"
#include "nelder_mead.hpp"

namespace darcyvae {

// Exact KD-tree over a row-major (n, d) array. Sliding-midpoint splits of the
// widest side of each node's tight bounding box (median split when the
// midpoint would leave fewer than 1/8 of the points on one side, so the depth
// stays O(log n)); leaves of at most leaf_size points stored contiguously.
// Coincident points share one leaf of any size, searched in O(k) (k-NN) or
// O(1) (radius counts), so heavily repeated data stays fast.
class KDTree {
 public:
  static constexpr Index kDefaultLeafSize = 8;

  // Copies `data` (n rows of d doubles). Throws std::invalid_argument for
  // n < 1, d < 1, leaf_size < 1, non-finite data or n >= 2^31.
  KDTree(const double* data, Index n, Index d, Index leaf_size = kDefaultLeafSize);

  Index size() const { return n_; }
  Index dim() const { return d_; }
  Index leaf_size() const { return leaf_size_; }
  Index node_count() const { return static_cast<Index>(nodes_.size()); }
  Index depth() const { return depth_; }

  // Points in tree (leaf) order, row-major (n, d), and the original index of
  // each row.
  const double* points() const { return pts_.data(); }
  const Index* indices() const { return ids_.data(); }
  // Row of points() holding each original index.
  const Index* rows() const { return pos_.data(); }

  // For each of the nq row-major queries: the k smallest distances in
  // ascending order (dist, row-major (nq, k)) and the original indices of
  // those points (idx, may be null). exclude (may be null): per query, the
  // original index of a point to skip (-1: none). weights (may be null):
  // per-axis weights w of dist_w. Ties are broken arbitrarily; distances are
  // exact. Requires 1 <= k <= n (n - 1 when a query excludes a point).
  void knn(const double* queries, Index nq, Index k, const Index* exclude,
           const double* weights, double* dist, Index* idx, int threads) const;

  // For each query: the number of points p with dist(q, p) <= radius[i]
  // (closed ball; excluded index skipped) and the largest such distance
  // (max_dist, may be null; 0 when the count is 0).
  void count_within(const double* queries, Index nq, const double* radius,
                    const Index* exclude, const double* weights, Index* count,
                    double* max_dist, int threads) const;

  struct Node {
    double lo;            // internal: largest coordinate of the left child along dim
    double hi;            // internal: smallest coordinate of the right child along dim
    std::int32_t dim;     // split dimension; -1 for a leaf, -2 for a leaf of coincident points
    std::int32_t right;   // internal: index of the right child (left child is this + 1)
    std::int32_t begin;   // leaf: rows [begin, end) of points()
    std::int32_t end;
  };
  const std::vector<Node>& nodes() const { return nodes_; }

 private:
  std::int32_t build(Index begin, Index end, Index depth, Index slot);

  Index n_ = 0;
  Index d_ = 0;
  Index leaf_size_ = kDefaultLeafSize;
  Index depth_ = 0;
  std::vector<Node> nodes_;
  std::vector<double> pts_;
  std::vector<Index> ids_;
  std::vector<Index> pos_;
  std::vector<double> boxes_;  // build scratch: node boxes along the current path
};

enum class KLMethod { fixed, adaptive };

// "fixed" or "adaptive"; throws std::invalid_argument.
KLMethod parse_kl_method(const std::string& name);
const char* kl_method_name(KLMethod method);

// One evaluation of the estimator. value is NaN when some sample has a zero
// k-th neighbour distance, judged the same way by both methods: zero_x counts
// samples whose rho_k is 0 (x_i repeated more than k times), zero_y those
// whose nu_k is 0 (x_i coincides with a point of y; not counted when
// min_ratio > 0 clips the ratio instead).
struct KLValue {
  double value = 0.0;
  Index zero_x = 0;
  Index zero_y = 0;
};

// The p-side of the Wang-Kulkarni-Verdu estimators (docs/scores.md §5a):
//   fixed:    D = (d/n) sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))
//   adaptive: eps(i) = max(rho_k(i), nu_k(i)); l_i = #{x_j, j != i, within
//             eps(i)}, k_i = #{y_j within eps(i)} (closed balls), except that
//             a side whose k-th distance equals eps(i) counts exactly k (its
//             points tied at eps(i) beyond the k-th are left out, as an
//             infinitesimal jitter would leave them: so ties count the same
//             way as in the fixed estimator, by rank);
//             D = (d/n) sum_i log(nu_{k_i}(i) / rho_{l_i}(i))
//                 + (1/n) sum_i [psi(l_i) - psi(k_i)] + log(m / (n - 1))
//             (WKV 2009 eq. 17 with the "epsilon" choice of l_i, k_i).
// Construction builds the tree over x and computes rho_k(i) once; every
// divergence() call reuses both.
class KLEstimator {
 public:
  // Requires n >= 2, 1 <= k <= n - 1.
  KLEstimator(const double* x, Index n, Index d, Index k, KLMethod method,
              Index leaf_size, int threads);

  // D(p || q) against the samples held by `y` (m points), or, when scale is
  // not null, against the points y' with y'_c = a_c (y_{perm[c]} - b_c),
  // a = scale, b = shift (may be null for b = 0), perm a permutation of the
  // axes (may be null for the identity); every a_c must be finite and
  // non-zero. The tree over y is reused as it is: x is mapped to
  // x_c / a_c + b_c on axis perm[c] and searched with weights |a|.
  // paired: y has n points and y_i is left out of the neighbours of x_i
  // (then m - 1 enters the estimator in place of m). min_ratio >= 0: each
  // per-sample ratio nu/rho is raised to at least min_ratio (0: the plain
  // estimator); with min_ratio > 0 a zero nu is clipped, not reported.
  // Requires k <= m (m - 1 when paired). The result does not depend on
  // `threads`.
  KLValue divergence(const KDTree& y, const double* scale, const double* shift,
                     const Index* perm, bool paired, double min_ratio, int threads) const;

  const KDTree& tree() const { return xtree_; }
  Index k() const { return k_; }
  KLMethod method() const { return method_; }
  // rho_k(i) of every sample, in the original order of x.
  std::vector<double> rho() const;

 private:
  KDTree xtree_;
  Index k_;
  KLMethod method_;
  // Squared distances from each x (tree order) to its kx_ nearest other x,
  // ascending: rho_k and, for the adaptive method, the ball counts l_i of
  // most samples come from this list without a radius query.
  Index kx_;
  std::vector<double> rx2_;
};

// The S_KL search's minimisation of one orientation (docs/scores.md §5):
// Nelder-Mead (nelder_mead.hpp) over p = (log-scales, standardised shifts)
// of D(x || a o (y_perm - b)) with a = a0 o exp(p[:d]), b = b0 + p[d:] o step,
// from `simplex` ((2d + 1) x 2d), the log-scales within +-log_range. A
// divergence with a y sample on an x sample (nu = 0) counts as +inf.
// maxfev <= 0: scipy's default. Each evaluation is one
// KLEstimator::divergence call (threads as there).
NelderMeadResult minimize_divergence(const KLEstimator& est, const KDTree& y, const double* a0,
                                     const double* b0, const double* step, const Index* perm,
                                     const double* simplex, double log_range, double xatol,
                                     double fatol, int maxfev, bool paired, double min_ratio,
                                     int threads);

// The digamma function psi(x) for x > 0 (recurrence to x >= 10, then the
// asymptotic series to the x^-12 term); NaN for x <= 0 or NaN.
double digamma(double x);

}  // namespace darcyvae

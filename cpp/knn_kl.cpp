#include "knn_kl.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parallel.hpp"

namespace darcyvae {

namespace {

using Node = KDTree::Node;
constexpr double kInf = std::numeric_limits<double>::infinity();
// Queries are handed to the workers in blocks of this many (tree-ordered)
// rows: small inputs run on the calling thread, and neighbouring queries of a
// block touch the same leaves.
constexpr std::size_t kBlock = 1024;
// Relative slack on radius pruning: the incremental box distance can round
// a hair above the distance of a point lying on the box, and a closed-ball
// count must never lose the point that defined the radius. Only pruning uses
// it; membership is decided by the exact point distance.
constexpr double kPruneSlack = 1e-12;
// The adaptive estimator looks up k + kExtra neighbours on each side; a ball
// of radius eps(i) holding fewer points is counted from these lists, larger
// ones by a radius query.
constexpr Index kExtra = 2;

// Number of entries of the ascending list l[0..len) that are <= r2, and the
// largest of them (0 if none). `complete` is true when the count is final:
// the list holds a larger entry, or it holds every admissible point.
struct BallFromList {
  Index count;
  double max_d2;
  bool complete;
};
inline BallFromList ball_from_list(const double* l, Index len, double r2, bool whole) {
  Index c = 0;
  while (c < len && l[c] <= r2) ++c;
  return {c, c > 0 ? l[c - 1] : 0.0, c < len || whole};
}

template <int D>
inline Index dims(Index d) {
  return D > 0 ? D : d;
}

template <int D, bool W>
inline double dist2(const double* q, const double* p, const double* w2, Index d) {
  const Index dd = dims<D>(d);
  double s = 0.0;
  for (Index c = 0; c < dd; ++c) {
    const double t = q[c] - p[c];
    s += W ? w2[c] * (t * t) : t * t;
  }
  return s;
}

// Lower bounds on the squared distance to the cells are kept incrementally
// (Arya & Mount): off[c] is the weighted squared offset along axis c from the
// query to the current cell, rd their sum. Going to the far child of a split
// along s only replaces off[s].
// The interior step of every search: the child on the query's side of the split
// first, then the other one when `visit_far(rd_far)` accepts its lower bound
// rd_far (evaluated after the near child, so it sees the tightened bound).
template <bool W, class Search, class VisitFar>
inline void descend_split(const Node& nd, std::int32_t node, double rd, const double* q,
                          const double* w2, double* off, Search&& search,
                          VisitFar&& visit_far) {
  const int s = nd.dim;
  const double dl = q[s] - nd.lo;  // > 0: query beyond the left child
  const double dr = nd.hi - q[s];  // > 0: query before the right child
  std::int32_t near_child = node + 1;
  std::int32_t far_child = nd.right;
  double gap = dr;
  if (dl > dr) {
    near_child = nd.right;
    far_child = node + 1;
    gap = dl;
  }
  search(near_child, rd);
  const double old = off[s];
  const double now = W ? w2[s] * (gap * gap) : gap * gap;
  const double rd_far = rd - old + now;
  if (visit_far(rd_far)) {
    off[s] = now;
    search(far_child, rd_far);
    off[s] = old;
  }
}

template <int D, bool W>
struct KnnSearch {
  const Node* nodes = nullptr;
  const double* pts = nullptr;
  const Index* ids = nullptr;
  Index d = 0;
  const double* q = nullptr;   // the query (set per query)
  const double* w2 = nullptr;  // squared axis weights (W only)
  Index excl = -1;             // original index to skip (set per query), -1: none
  Index k = 0;
  double* bd = nullptr;  // k best squared distances, ascending
  Index* bi = nullptr;   // their original indices
  double* off = nullptr;  // d values of scratch

  void run() {
    for (Index c = 0; c < dims<D>(d); ++c) off[c] = 0.0;
    for (Index j = 0; j < k; ++j) {
      bd[j] = kInf;
      bi[j] = -1;
    }
    search(0, 0.0);
  }

  void insert(double d2, Index id) {
    Index j = k - 1;
    while (j > 0 && bd[j - 1] > d2) {
      bd[j] = bd[j - 1];
      bi[j] = bi[j - 1];
      --j;
    }
    bd[j] = d2;
    bi[j] = id;
  }

  void search(std::int32_t node, double rd) {
    const Node& nd = nodes[node];
    if (nd.dim < 0) {
      const Index dd = dims<D>(d);
      if (nd.dim == -2) {  // coincident points: one distance, at most k inserts
        const double d2 = dist2<D, W>(q, pts + nd.begin * dd, w2, d);
        for (Index j = nd.begin; j < nd.end && d2 < bd[k - 1]; ++j) {
          if (ids[j] != excl) insert(d2, ids[j]);
        }
        return;
      }
      for (Index j = nd.begin; j < nd.end; ++j) {
        const double d2 = dist2<D, W>(q, pts + j * dd, w2, d);
        if (d2 < bd[k - 1] && ids[j] != excl) insert(d2, ids[j]);
      }
      return;
    }
    descend_split<W>(
        nd, node, rd, q, w2, off, [this](std::int32_t c, double r) { search(c, r); },
        [this](double rd_far) { return rd_far < bd[k - 1]; });
  }
};

template <int D, bool W>
struct RadiusSearch {
  const Node* nodes = nullptr;
  const double* pts = nullptr;
  const Index* ids = nullptr;
  const Index* rows = nullptr;  // row of each original index (exclusion in coincident leaves)
  Index d = 0;
  const double* q = nullptr;   // the query (set per query)
  const double* w2 = nullptr;  // squared axis weights (W only)
  Index excl = -1;             // original index to skip (set per query), -1: none
  double r2 = 0.0;             // squared radius (set per query); < 0: empty ball
  double* off = nullptr;       // d values of scratch
  double prune = 0.0;
  Index count = 0;             // out: points in the closed ball
  double max_d2 = 0.0;         // out: largest squared distance among them

  void run() {
    for (Index c = 0; c < dims<D>(d); ++c) off[c] = 0.0;
    count = 0;
    max_d2 = 0.0;
    prune = r2 * (1.0 + kPruneSlack);
    if (r2 >= 0.0) search(0, 0.0);
  }

  void search(std::int32_t node, double rd) {
    const Node& nd = nodes[node];
    if (nd.dim < 0) {
      const Index dd = dims<D>(d);
      if (nd.dim == -2) {  // coincident points: one distance for all
        const double d2 = dist2<D, W>(q, pts + nd.begin * dd, w2, d);
        if (d2 <= r2) {
          const bool has_excl = excl >= 0 && rows[excl] >= nd.begin && rows[excl] < nd.end;
          const Index c = nd.end - nd.begin - (has_excl ? 1 : 0);
          if (c > 0) {
            count += c;
            max_d2 = std::max(max_d2, d2);
          }
        }
        return;
      }
      for (Index j = nd.begin; j < nd.end; ++j) {
        const double d2 = dist2<D, W>(q, pts + j * dd, w2, d);
        if (d2 <= r2 && ids[j] != excl) {
          ++count;
          max_d2 = std::max(max_d2, d2);
        }
      }
      return;
    }
    descend_split<W>(
        nd, node, rd, q, w2, off, [this](std::int32_t c, double r) { search(c, r); },
        [this](double rd_far) { return rd_far <= prune; });
  }
};

// A k-NN search of `tree` for k neighbours into bd / bi (k values each), with
// d values of scratch in off; the query and exclusion are set per query.
template <int D, bool W>
KnnSearch<D, W> knn_search(const KDTree& tree, Index k, const double* w2, double* bd, Index* bi,
                           double* off) {
  KnnSearch<D, W> s;
  s.nodes = tree.nodes().data();
  s.pts = tree.points();
  s.ids = tree.indices();
  s.d = tree.dim();
  s.w2 = w2;
  s.k = k;
  s.bd = bd;
  s.bi = bi;
  s.off = off;
  return s;
}

// A closed-ball count over `tree` with d values of scratch in off; the query,
// exclusion and radius are set per query.
template <int D, bool W>
RadiusSearch<D, W> radius_search(const KDTree& tree, const double* w2, double* off) {
  RadiusSearch<D, W> s;
  s.nodes = tree.nodes().data();
  s.pts = tree.points();
  s.ids = tree.indices();
  s.rows = tree.rows();
  s.d = tree.dim();
  s.w2 = w2;
  s.off = off;
  return s;
}

// Calls f(D, W) with D a std::integral_constant holding the compile-time
// dimension for d <= 3 (0: run-time dimension) and W whether weights are used.
template <typename F>
void dispatch(Index d, bool weighted, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (weighted) {
    switch (d) {
      case 1: f(std::integral_constant<int, 1>{}, T{}); return;
      case 2: f(std::integral_constant<int, 2>{}, T{}); return;
      case 3: f(std::integral_constant<int, 3>{}, T{}); return;
      default: f(std::integral_constant<int, 0>{}, T{}); return;
    }
  }
  switch (d) {
    case 1: f(std::integral_constant<int, 1>{}, N{}); return;
    case 2: f(std::integral_constant<int, 2>{}, N{}); return;
    case 3: f(std::integral_constant<int, 3>{}, N{}); return;
    default: f(std::integral_constant<int, 0>{}, N{}); return;
  }
}

void parallel_blocks(Index n, int threads, const std::function<void(Index, Index)>& body) {
  const std::size_t nb = (static_cast<std::size_t>(n) + kBlock - 1) / kBlock;
  parallel_for(nb, threads, [&](std::size_t b, int) {
    const Index r0 = static_cast<Index>(b * kBlock);
    body(r0, std::min<Index>(n, r0 + static_cast<Index>(kBlock)));
  });
}

std::vector<double> squared_weights(const double* weights, Index d) {
  std::vector<double> w2;
  if (weights == nullptr) return w2;
  w2.resize(static_cast<std::size_t>(d));
  for (Index c = 0; c < d; ++c) {
    if (!std::isfinite(weights[c]) || weights[c] == 0.0) {
      throw std::invalid_argument("KDTree: weights must be finite and non-zero");
    }
    w2[static_cast<std::size_t>(c)] = weights[c] * weights[c];
  }
  return w2;
}

}  // namespace

// ---------------------------------------------------------------- KDTree

namespace {

// Tight bounding box [lo, hi] of some rows: box[0..d) = lo, box[d..2d) = hi.
inline void box_reset(double* box, Index d) {
  std::fill(box, box + d, kInf);
  std::fill(box + d, box + 2 * d, -kInf);
}
inline void box_extend(double* box, const double* row, Index d) {
  for (Index c = 0; c < d; ++c) {
    box[c] = std::min(box[c], row[c]);
    box[d + c] = std::max(box[d + c], row[c]);
  }
}


// Hoare partition of rows [begin, end) of the row-major points P (and their
// ids) by coordinate s < mid; returns the first row with coordinate >= mid.
// The tight boxes of both sides are gathered on the way (one pass), in
// registers for a compile-time dimension D (0: run-time d).
template <int D>
Index partition_midpoint(double* P, Index* ids, Index begin, Index end, Index d, Index s,
                         double mid, double* lbox, double* rbox) {
  constexpr int kCap = D > 0 ? D : 1;
  const Index dd = dims<D>(d);
  double llo[kCap], lhi[kCap], rlo[kCap], rhi[kCap];
  if constexpr (D > 0) {
    for (int c = 0; c < D; ++c) {
      llo[c] = rlo[c] = kInf;
      lhi[c] = rhi[c] = -kInf;
    }
  } else {
    box_reset(lbox, d);
    box_reset(rbox, d);
  }
  auto extend = [&](bool left, const double* row) {
    if constexpr (D > 0) {
      double* lo = left ? llo : rlo;
      double* hi = left ? lhi : rhi;
      for (int c = 0; c < D; ++c) {
        lo[c] = std::min(lo[c], row[c]);
        hi[c] = std::max(hi[c], row[c]);
      }
    } else {
      box_extend(left ? lbox : rbox, row, d);
    }
  };
  Index i = begin;
  Index j = end - 1;
  while (true) {
    while (i <= j && P[i * dd + s] < mid) extend(true, P + (i++) * dd);
    while (i <= j && !(P[j * dd + s] < mid)) extend(false, P + (j--) * dd);
    if (i >= j) break;
    for (Index c = 0; c < dd; ++c) std::swap(P[i * dd + c], P[j * dd + c]);
    std::swap(ids[i], ids[j]);
    extend(true, P + (i++) * dd);
    extend(false, P + (j--) * dd);
  }
  if constexpr (D > 0) {
    for (int c = 0; c < D; ++c) {
      lbox[c] = llo[c];
      lbox[D + c] = lhi[c];
      rbox[c] = rlo[c];
      rbox[D + c] = rhi[c];
    }
  }
  return i;
}

// Median split: quickselect with a three-way partition (runs of equal
// coordinates cannot stall it) so that rows [begin, split) have coordinate s
// <= rows [split, end); then the tight boxes of both sides.
template <int D>
void select_median(double* P, Index* ids, Index begin, Index end, Index split, Index d, Index s,
                   double* lbox, double* rbox) {
  const Index dd = dims<D>(d);
  auto swap_rows = [&](Index a, Index b) {
    for (Index c = 0; c < dd; ++c) std::swap(P[a * dd + c], P[b * dd + c]);
    std::swap(ids[a], ids[b]);
  };
  Index b = begin;
  Index e = end;
  while (e - b > 1) {
    const double x0 = P[b * dd + s];
    const double x1 = P[(b + (e - b) / 2) * dd + s];
    const double x2 = P[(e - 1) * dd + s];
    const double pivot = std::max(std::min(x0, x1), std::min(std::max(x0, x1), x2));
    Index lt = b;
    Index k = b;
    Index gt = e;
    while (k < gt) {
      const double v = P[k * dd + s];
      if (v < pivot) {
        swap_rows(lt++, k++);
      } else if (v > pivot) {
        swap_rows(k, --gt);
      } else {
        ++k;
      }
    }
    if (split < lt) {
      e = lt;
    } else if (split >= gt) {
      b = gt;
    } else {
      break;
    }
  }
  box_reset(lbox, dd);
  box_reset(rbox, dd);
  for (Index r = begin; r < split; ++r) box_extend(lbox, P + r * dd, dd);
  for (Index r = split; r < end; ++r) box_extend(rbox, P + r * dd, dd);
}

}  // namespace

KDTree::KDTree(const double* data, Index n, Index d, Index leaf_size)
    : n_(n), d_(d), leaf_size_(leaf_size) {
  if (n < 1) throw std::invalid_argument("KDTree: need at least one point");
  if (d < 1) throw std::invalid_argument("KDTree: dimension must be >= 1");
  if (leaf_size < 1) throw std::invalid_argument("KDTree: leaf_size must be >= 1");
  if (n >= std::numeric_limits<std::int32_t>::max()) {
    throw std::invalid_argument("KDTree: at most 2^31 - 2 points");
  }
  pts_.assign(data, data + n * d);
  for (double v : pts_) {
    if (!std::isfinite(v)) throw std::invalid_argument("KDTree: data must be finite");
  }
  ids_.resize(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) ids_[static_cast<std::size_t>(i)] = i;
  nodes_.reserve(static_cast<std::size_t>(2 * (n / leaf_size) + 8));
  boxes_.resize(static_cast<std::size_t>(64 * 2 * d));
  box_reset(boxes_.data(), d);
  for (Index r = 0; r < n; ++r) box_extend(boxes_.data(), pts_.data() + r * d, d);
  build(0, n, 0, 0);
  boxes_.clear();
  boxes_.shrink_to_fit();
  pos_.resize(static_cast<std::size_t>(n));
  for (Index r = 0; r < n; ++r) pos_[static_cast<std::size_t>(ids_[static_cast<std::size_t>(r)])] = r;
}

// Builds the node over rows [begin, end) whose tight box is boxes_ slot
// `slot`; the children's boxes are gathered while partitioning (one pass over
// the rows per level) into slots 2 (depth + 1) and 2 (depth + 1) + 1, which
// the left subtree's own recursion (deeper slots) leaves intact.
std::int32_t KDTree::build(Index begin, Index end, Index depth, Index slot) {
  const auto id = static_cast<std::int32_t>(nodes_.size());
  nodes_.push_back(Node{0.0, 0.0, -1, -1, static_cast<std::int32_t>(begin),
                        static_cast<std::int32_t>(end)});
  depth_ = std::max(depth_, depth);
  const Index count = end - begin;
  if (count <= leaf_size_) return id;

  const Index d = d_;
  double* P = pts_.data();

  const Index lslot = 2 * (depth + 1);
  const Index need = (lslot + 2) * 2 * d;
  if (static_cast<Index>(boxes_.size()) < need) boxes_.resize(static_cast<std::size_t>(need));
  const double* box = boxes_.data() + slot * 2 * d;
  Index s = 0;
  double extent = -1.0;
  for (Index c = 0; c < d; ++c) {
    const double e = box[d + c] - box[c];
    if (e > extent) {
      extent = e;
      s = c;
    }
  }
  if (!(extent > 0.0)) {  // all points coincide: one leaf of any size
    nodes_[static_cast<std::size_t>(id)].dim = -2;
    return id;
  }

  // Midpoint split: rows with coordinate < mid first, both boxes on the way.
  const double mid = box[s] + 0.5 * extent;
  double* lbox = boxes_.data() + lslot * 2 * d;
  double* rbox = lbox + 2 * d;
  Index i = 0;
  switch (d) {
    case 1: i = partition_midpoint<1>(P, ids_.data(), begin, end, d, s, mid, lbox, rbox); break;
    case 2: i = partition_midpoint<2>(P, ids_.data(), begin, end, d, s, mid, lbox, rbox); break;
    case 3: i = partition_midpoint<3>(P, ids_.data(), begin, end, d, s, mid, lbox, rbox); break;
    default: i = partition_midpoint<0>(P, ids_.data(), begin, end, d, s, mid, lbox, rbox); break;
  }
  Index split = i;
  const Index min_side = std::max<Index>(1, count / 8);
  if (split - begin < min_side || end - split < min_side) {
    split = begin + count / 2;
    switch (d) {
      case 1: select_median<1>(P, ids_.data(), begin, end, split, d, s, lbox, rbox); break;
      case 2: select_median<2>(P, ids_.data(), begin, end, split, d, s, lbox, rbox); break;
      case 3: select_median<3>(P, ids_.data(), begin, end, split, d, s, lbox, rbox); break;
      default: select_median<0>(P, ids_.data(), begin, end, split, d, s, lbox, rbox); break;
    }
  }
  const double left_max = lbox[d + s];
  const double right_min = rbox[s];

  build(begin, split, depth + 1, lslot);
  const std::int32_t right = build(split, end, depth + 1, lslot + 1);
  Node& nd = nodes_[static_cast<std::size_t>(id)];
  nd.dim = static_cast<std::int32_t>(s);
  nd.lo = left_max;
  nd.hi = right_min;
  nd.right = right;
  return id;
}

void KDTree::knn(const double* queries, Index nq, Index k, const Index* exclude,
                 const double* weights, double* dist, Index* idx, int threads) const {
  if (k < 1 || k > n_) {
    throw std::invalid_argument("KDTree.knn: k must be in [1, n] (n - 1 with exclusion)");
  }
  const std::vector<double> w2 = squared_weights(weights, d_);
  if (exclude != nullptr && k > n_ - 1) {
    for (Index i = 0; i < nq; ++i) {
      if (exclude[i] >= 0 && exclude[i] < n_) {
        throw std::invalid_argument("KDTree.knn: k must be <= n - 1 when a point is excluded");
      }
    }
  }
  dispatch(d_, weights != nullptr, [&](auto Dc, auto Wc) {
    constexpr int D = decltype(Dc)::value;
    constexpr bool W = decltype(Wc)::value;
    parallel_blocks(nq, threads, [&](Index r0, Index r1) {
      std::vector<double> off(static_cast<std::size_t>(d_)), bd(static_cast<std::size_t>(k));
      std::vector<Index> bi(static_cast<std::size_t>(k));
      auto s = knn_search<D, W>(*this, k, w2.data(), bd.data(), bi.data(), off.data());
      for (Index r = r0; r < r1; ++r) {
        s.q = queries + r * d_;
        s.excl = exclude != nullptr ? exclude[r] : -1;
        s.run();
        for (Index j = 0; j < k; ++j) {
          dist[r * k + j] = std::sqrt(bd[static_cast<std::size_t>(j)]);
          if (idx != nullptr) idx[r * k + j] = bi[static_cast<std::size_t>(j)];
        }
      }
    });
  });
}

void KDTree::count_within(const double* queries, Index nq, const double* radius,
                          const Index* exclude, const double* weights, Index* count,
                          double* max_dist, int threads) const {
  const std::vector<double> w2 = squared_weights(weights, d_);
  dispatch(d_, weights != nullptr, [&](auto Dc, auto Wc) {
    constexpr int D = decltype(Dc)::value;
    constexpr bool W = decltype(Wc)::value;
    parallel_blocks(nq, threads, [&](Index r0, Index r1) {
      std::vector<double> off(static_cast<std::size_t>(d_));
      auto s = radius_search<D, W>(*this, w2.data(), off.data());
      for (Index r = r0; r < r1; ++r) {
        s.q = queries + r * d_;
        // an index outside [0, n) excludes nothing (and must not index rows)
        s.excl = exclude != nullptr && exclude[r] >= 0 && exclude[r] < n_ ? exclude[r] : -1;
        s.r2 = radius[r] >= 0.0 ? radius[r] * radius[r] : -1.0;
        s.run();
        count[r] = s.count;
        if (max_dist != nullptr) max_dist[r] = std::sqrt(s.max_d2);
      }
    });
  });
}

// ---------------------------------------------------------------- digamma

double digamma(double x) {
  if (!(x > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  double result = 0.0;
  while (x < 10.0) {
    result -= 1.0 / x;
    x += 1.0;
  }
  const double f = 1.0 / (x * x);
  // psi(x) ~ ln x - 1/(2x) - sum_k B_2k / (2k x^2k)
  const double series =
      f * (1.0 / 12 -
           f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132 - f * (691.0 / 32760))))));
  return result + std::log(x) - 0.5 / x - series;
}

// ---------------------------------------------------------------- KLEstimator

namespace {

// psi(l) for the ball counts l >= 1: a table for the common small counts.
double digamma_count(Index l) {
  static const std::vector<double> table = [] {
    std::vector<double> t(257);
    for (std::size_t i = 1; i < t.size(); ++i) t[i] = digamma(static_cast<double>(i));
    return t;
  }();
  return l < static_cast<Index>(table.size()) ? table[static_cast<std::size_t>(l)]
                                                : digamma(static_cast<double>(l));
}

}  // namespace

KLEstimator::KLEstimator(const double* x, Index n, Index d, Index k, KLMethod method,
                         Index leaf_size, int threads)
    : xtree_(x, n, d, leaf_size), k_(k), method_(method), kx_(0) {
  if (n < 2) throw std::invalid_argument("KLEstimator: need at least 2 samples of p");
  if (k < 1 || k > n - 1) throw std::invalid_argument("KLEstimator: k must be in [1, n - 1]");
  kx_ = method == KLMethod::adaptive ? std::min(k + kExtra, n - 1) : k;
  rx2_.resize(static_cast<std::size_t>(n * kx_));
  const double* P = xtree_.points();
  const Index* ids = xtree_.indices();
  dispatch(d, false, [&](auto Dc, auto Wc) {
    constexpr int D = decltype(Dc)::value;
    constexpr bool W = decltype(Wc)::value;
    parallel_blocks(n, threads, [&](Index r0, Index r1) {
      std::vector<double> off(static_cast<std::size_t>(d));
      std::vector<Index> bi(static_cast<std::size_t>(kx_));
      auto s = knn_search<D, W>(xtree_, kx_, nullptr, nullptr, bi.data(), off.data());
      for (Index r = r0; r < r1; ++r) {
        s.q = P + r * d;
        s.excl = ids[r];  // self-query: exclude by index, duplicates stay
        s.bd = rx2_.data() + r * kx_;
        s.run();
      }
    });
  });
}

std::vector<double> KLEstimator::rho() const {
  const Index n = xtree_.size();
  std::vector<double> out(static_cast<std::size_t>(n));
  const Index* ids = xtree_.indices();
  for (Index r = 0; r < n; ++r) {
    out[static_cast<std::size_t>(ids[r])] = std::sqrt(rx2_[static_cast<std::size_t>(r * kx_ + k_ - 1)]);
  }
  return out;
}

namespace {

// The affine map of the samples of q, y'_c = a_c (y_{perm[c]} - b_c), turned
// into a map of the queries: x_c goes to axis e = perm[c] as
// x_c / a_c + b_c, searched with weights w2_e = a_c^2 (docs/scores.md §5a, performance
// note). Inactive (no scale): queries are the samples of p themselves.
struct QueryMap {
  bool active = false;
  std::vector<Index> axis;     // e = perm[c]
  std::vector<double> inv_a;   // 1 / a_c
  std::vector<double> shift;   // b_c
  std::vector<double> w2;      // a_c^2 on axis e

  // The query of sample x (d values) into q (d values of scratch); returns
  // the pointer to search with.
  const double* apply(const double* x, double* q) const {
    if (!active) return x;
    for (std::size_t c = 0; c < axis.size(); ++c)
      q[static_cast<std::size_t>(axis[c])] = x[c] * inv_a[c] + shift[c];
    return q;
  }
};

QueryMap make_query_map(const double* scale, const double* shift, const Index* perm, Index d) {
  QueryMap map;
  if (perm != nullptr && scale == nullptr) {
    throw std::invalid_argument("KLEstimator: perm needs scale");
  }
  if (scale == nullptr) return map;
  const auto dd = static_cast<std::size_t>(d);
  map.active = true;
  map.axis.resize(dd);
  map.inv_a.resize(dd);
  map.shift.assign(dd, 0.0);
  map.w2.resize(dd);
  std::vector<char> seen(dd, 0);
  for (std::size_t c = 0; c < dd; ++c) {
    const Index e = perm != nullptr ? perm[c] : static_cast<Index>(c);
    if (e < 0 || e >= d || seen[static_cast<std::size_t>(e)]) {
      throw std::invalid_argument("KLEstimator: perm must be a permutation of 0..d-1");
    }
    seen[static_cast<std::size_t>(e)] = 1;
    map.axis[c] = e;
    const double a = scale[c];
    if (!std::isfinite(a) || a == 0.0) {
      throw std::invalid_argument("KLEstimator: scale must be finite and non-zero");
    }
    map.inv_a[c] = 1.0 / a;
    map.w2[static_cast<std::size_t>(e)] = a * a;
    if (shift != nullptr) {
      if (!std::isfinite(shift[c])) throw std::invalid_argument("KLEstimator: shift must be finite");
      map.shift[c] = shift[c];
    }
  }
  return map;
}

// Number of samples of q the estimator sees (m, or m - 1 when paired), after
// checking the arguments of KLEstimator::divergence.
Index effective_m(const KDTree& x, const KDTree& y, Index k, bool paired, double min_ratio) {
  const Index m = y.size();
  if (y.dim() != x.dim()) throw std::invalid_argument("KLEstimator: x and y differ in dimension");
  if (paired && m != x.size()) {
    throw std::invalid_argument("KLEstimator: paired samples need as many y as x");
  }
  const Index m_eff = paired ? m - 1 : m;
  if (k > m_eff) {
    throw std::invalid_argument("KLEstimator: k must be <= m (m - 1 when paired)");
  }
  if (!(min_ratio >= 0.0) || !std::isfinite(min_ratio)) {
    throw std::invalid_argument("KLEstimator: min_ratio must be finite and >= 0");
  }
  return m_eff;
}

// One sample's term of the estimator: (d/2) log(num2 / den2) + t with num2,
// den2 the squared nu / rho distances the estimator divides (nu_k / rho_k,
// or nu_{k_i} / rho_{l_i} for the adaptive method). `zero` is decided on the
// k-th distances by the caller, the same way for both methods: bit 0, rho_k
// is 0 (x_i repeated more than k times); bit 1, nu_k is 0 (x_i coincides
// with a y) and min_ratio does not clip it.
struct SampleTerm {
  double value = 0.0;
  unsigned char zero = 0;
};

SampleTerm sample_term(double num2, double den2, double t, double half_d, double min_ratio2,
                       unsigned char zero) {
  SampleTerm out;
  out.zero = zero;
  out.value = zero ? 0.0 : half_d * std::log(std::max(num2 / den2, min_ratio2)) + t;
  return out;
}

// A closed ball counted from a sorted neighbour list, or, when the list does
// not settle it, by a radius query.
template <int D, bool W>
BallFromList count_ball(const double* list, Index len, bool whole, double eps2,
                        RadiusSearch<D, W>* search, const double* q, Index excl) {
  const BallFromList from_list = ball_from_list(list, len, eps2, whole);
  if (from_list.complete) return from_list;
  search->q = q;
  search->excl = excl;
  search->r2 = eps2;
  search->run();
  return {search->count, search->max_d2, true};
}

// Sum of the per-sample terms (in original order, so the value does not
// depend on the thread count) plus log(m / (n - 1)), or NaN with the counts
// of zero distances.
KLValue combine_terms(const std::vector<SampleTerm>& terms, Index m_eff) {
  KLValue out;
  double sum = 0.0;
  for (const SampleTerm& t : terms) {
    sum += t.value;
    out.zero_x += (t.zero & 1) ? 1 : 0;
    out.zero_y += (t.zero & 2) ? 1 : 0;
  }
  const auto n = static_cast<Index>(terms.size());
  out.value = (out.zero_x + out.zero_y) > 0
                  ? std::numeric_limits<double>::quiet_NaN()
                  : sum / static_cast<double>(n) +
                        std::log(static_cast<double>(m_eff) / static_cast<double>(n - 1));
  return out;
}

}  // namespace

KLMethod parse_kl_method(const std::string& name) {
  if (name == "fixed") return KLMethod::fixed;
  if (name == "adaptive") return KLMethod::adaptive;
  throw std::invalid_argument("method must be 'fixed' or 'adaptive'; got '" + name + "'");
}

const char* kl_method_name(KLMethod method) {
  return method == KLMethod::fixed ? "fixed" : "adaptive";
}

KLValue KLEstimator::divergence(const KDTree& y, const double* scale, const double* shift,
                                const Index* perm, bool paired, double min_ratio,
                                int threads) const {
  const Index n = xtree_.size();
  const Index d = xtree_.dim();
  const Index m_eff = effective_m(xtree_, y, k_, paired, min_ratio);
  const QueryMap map = make_query_map(scale, shift, perm, d);
  const double min_ratio2 = min_ratio * min_ratio;
  const bool adaptive = method_ == KLMethod::adaptive;
  const Index k = k_;
  // Neighbours looked up on the y side: k, plus kExtra for the adaptive balls.
  const Index kq = adaptive ? std::min(k + kExtra, m_eff) : k;
  const Index kx = kx_;
  const Index n_other = n - 1;
  const double* P = xtree_.points();
  const Index* ids = xtree_.indices();
  const double half_d = 0.5 * static_cast<double>(d);
  std::vector<SampleTerm> terms(static_cast<std::size_t>(n));  // by original index

  dispatch(d, map.active, [&](auto Dc, auto Wc) {
    constexpr int D = decltype(Dc)::value;
    constexpr bool W = decltype(Wc)::value;
    parallel_blocks(n, threads, [&](Index r0, Index r1) {
      std::vector<double> off(static_cast<std::size_t>(d)), bd(static_cast<std::size_t>(kq));
      std::vector<double> qbuf(static_cast<std::size_t>(d));
      std::vector<Index> bi(static_cast<std::size_t>(kq));
      auto ys = knn_search<D, W>(y, kq, map.w2.data(), bd.data(), bi.data(), off.data());
      auto yr = radius_search<D, W>(y, map.w2.data(), off.data());
      auto xr = radius_search<D, false>(xtree_, nullptr, off.data());
      for (Index r = r0; r < r1; ++r) {
        const double* xq = P + r * d;
        const double* q = map.apply(xq, qbuf.data());
        const Index id = ids[r];
        const Index excl = paired ? id : -1;
        ys.q = q;
        ys.excl = excl;
        ys.run();
        const double* rx = rx2_.data() + r * kx;
        double num2 = bd[static_cast<std::size_t>(k - 1)];  // squared nu_k, then nu_{k_i}
        double den2 = rx[k - 1];                             // squared rho_k, then rho_{l_i}
        // Zero k-th distances, judged alike by both methods (docs/scores.md §5a, ties).
        unsigned char zero = 0;
        if (!(den2 > 0.0)) zero |= 1;
        if (!(num2 > 0.0) && min_ratio2 == 0.0) zero |= 2;
        double t = 0.0;
        if (adaptive && zero == 0) {
          // eps(i)^2 = max(rho_k, nu_k)^2 and the ball counts l_i (x, self
          // excluded) and k_i (y). A side whose k-th distance is eps(i) holds
          // exactly k points of the ball, as under any continuous law: points
          // tied with its k-th neighbour at distance eps(i) are counted as if
          // an infinitesimal jitter had put them outside (the limit of
          // vanishing jitter; counting a tied group whole would let repeated
          // or collapsed samples of q pass for a large density). The other
          // side counts its closed ball, whose largest distance is then its
          // l_i-th / k_i-th.
          const double eps2 = std::max(den2, num2);
          Index l = k;
          Index kk = k;
          if (den2 < eps2) {
            const BallFromList bx = count_ball(rx, kx, kx == n_other, eps2, &xr, xq, id);
            l = bx.count;
            den2 = bx.max_d2;
          }
          if (num2 < eps2) {
            const BallFromList by = count_ball(bd.data(), kq, kq == m_eff, eps2, &yr, q, excl);
            kk = by.count;
            num2 = by.max_d2;
          }
          t = digamma_count(l) - digamma_count(kk);
        }
        terms[static_cast<std::size_t>(id)] = sample_term(num2, den2, t, half_d, min_ratio2, zero);
      }
    });
  });
  return combine_terms(terms, m_eff);
}

NelderMeadResult minimize_divergence(const KLEstimator& est, const KDTree& y, const double* a0,
                                     const double* b0, const double* step, const Index* perm,
                                     const double* simplex, double log_range, double xatol,
                                     double fatol, int maxfev, bool paired, double min_ratio,
                                     int threads) {
  const Index d = est.tree().dim();
  const auto dd = static_cast<std::size_t>(d);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> lower(2 * dd, -inf), upper(2 * dd, inf);
  std::fill(lower.begin(), lower.begin() + d, -log_range);
  std::fill(upper.begin(), upper.begin() + d, log_range);
  std::vector<double> a(dd), b(dd);
  auto objective = [&](const double* p) {
    for (std::size_t c = 0; c < dd; ++c) {
      a[c] = a0[c] * std::exp(p[c]);
      b[c] = b0[c] + p[dd + c] * step[c];
    }
    const KLValue v = est.divergence(y, a.data(), b.data(), perm, paired, min_ratio, threads);
    return v.zero_y ? inf : v.value;
  };
  return nelder_mead(objective, simplex, static_cast<int>(2 * d), lower.data(), upper.data(),
                     xatol, fatol, maxfev, 0);
}

}  // namespace darcyvae

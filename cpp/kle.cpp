// darcyvae: Karhunen-Loeve expansion (see kle.hpp for the method).
#include "kle.hpp"

#include <unsupported/Eigen/FFT>

#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel.hpp"

namespace darcyvae {

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Above this many nodes a side the sector products use the FFT (measured on
// a 2-core EPYC: per product the trigonometric GEMM form takes 1.7 / 8.8 /
// 55 ms at N = 129 / 257 / 385, the FFT 4.4 / 22 / 48 ms).
constexpr int kTrigMaxGrid = 360;
// Blocks up to this dimension are always solved densely; larger blocks go
// densely when they want more than 30% of their eigenpairs (measured at
// N = 65: s = 1000 (26% of the largest block) Lanczos 1.0 s vs dense 1.9 s;
// s = 1500 (39%) Lanczos 2.3 s vs dense 1.6 s).
constexpr Index kDenseMaxDim = 200;

std::string num(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

// cos / sin of 2 pi k / M with k reduced exactly in integers first.
double cos_frac(long long k, long long M) {
  return std::cos(kTwoPi * static_cast<double>(k % M) / static_cast<double>(M));
}
double sin_frac(long long k, long long M) {
  return std::sin(kTwoPi * static_cast<double>(k % M) / static_cast<double>(M));
}

// splitmix64: a deterministic pseudo-random stream for start vectors.
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
double uniform_pm_half(std::uint64_t seed, std::uint64_t i) {
  return static_cast<double>(splitmix64(seed * 0x100000001B3ULL + i) >> 11) * 0x1.0p-53 - 0.5;
}

// ---------------------------------------------------------------------------
// One direction of the grid split by the reflection i -> N - 1 - i.
// Quarter index a of parity p stands for the unit vector
// (e_a + p e_{N-1-a}) / sqrt(2), or e_a at the centre (odd N, p = +1 only).
Index half_size(int N, int p) { return p > 0 ? (N + 1) / 2 : N / 2; }

struct Node {
  int index;
  double coeff;
};

// Nodes (<= 2) of quarter index a for parity p.
std::array<Node, 2> half_nodes(int N, int p, Index a, int* count) {
  const int i = static_cast<int>(a);
  const int j = N - 1 - i;
  if (i == j) {
    *count = 1;
    return {Node{i, 1.0}, Node{i, 0.0}};
  }
  *count = 2;
  const double c = std::sqrt(0.5);
  return {Node{i, c}, Node{j, p * c}};
}

// Rows of the real orthonormal eigenbasis of the circulant of size
// M = 2(N-1) whose restriction to the grid has parity p, as a matrix
// B (F x n_p) acting on quarter coordinates, with the frequency of each row.
void trig_rows(int N, int p, MatrixXd* B, std::vector<int>* freq) {
  const long long M = 2LL * (N - 1);
  const Index n = half_size(N, p);
  struct Row {
    int f;
    bool is_sin;
  };
  std::vector<Row> rows;
  for (int f = 0; f <= N - 1; ++f) {
    const int cos_parity = (f % 2 == 0) ? 1 : -1;
    if (cos_parity == p) rows.push_back({f, false});
    if (f > 0 && f < N - 1 && -cos_parity == p) rows.push_back({f, true});
  }
  B->resize(static_cast<Index>(rows.size()), n);
  freq->resize(rows.size());
  for (std::size_t g = 0; g < rows.size(); ++g) {
    const int f = rows[g].f;
    (*freq)[g] = f;
    const double norm = (f == 0 || f == N - 1) ? std::sqrt(1.0 / static_cast<double>(M))
                                               : std::sqrt(2.0 / static_cast<double>(M));
    for (Index a = 0; a < n; ++a) {
      const long long k = static_cast<long long>(f) * a;
      const double val = rows[g].is_sin ? sin_frac(k, M) : cos_frac(k, M);
      const bool centre = (2 * a == N - 1);
      (*B)(static_cast<Index>(g), a) = norm * val * (centre ? 1.0 : std::sqrt(2.0));
    }
  }
}

// ---------------------------------------------------------------------------
// Symmetry blocks.
struct Block {
  int px = 1;        // parity in x (+1 even, -1 odd)
  int py = 1;        // parity in y
  int sym = 0;       // 0: none; +1 / -1: S-even / S-odd (needs px == py, isotropic)
  bool image = false;  // also stands for its S-image (sector (py, px)), same eigenvalues
  Index ny = 0, nx = 0;  // quarter-grid shape
  Index dim = 0;         // dimension of the block
  Index qsize() const { return ny * nx; }
};

std::vector<Block> make_blocks(const KleProblem& pr) {
  const int N = pr.grid;
  auto sector = [N](int px, int py, int sym, bool image) {
    Block b;
    b.px = px;
    b.py = py;
    b.sym = sym;
    b.image = image;
    b.ny = half_size(N, py);
    b.nx = half_size(N, px);
    if (sym == 0) {
      b.dim = b.ny * b.nx;
    } else {
      b.dim = sym > 0 ? b.nx * (b.nx + 1) / 2 : b.nx * (b.nx - 1) / 2;
    }
    return b;
  };
  std::vector<Block> blocks;
  if (pr.isotropic()) {
    // The odd-in-x, even-in-y sector first: its S-image is the even-odd one.
    blocks.push_back(sector(-1, 1, 0, true));
    blocks.push_back(sector(1, 1, 1, false));
    blocks.push_back(sector(1, 1, -1, false));
    blocks.push_back(sector(-1, -1, 1, false));
    blocks.push_back(sector(-1, -1, -1, false));
  } else {
    blocks.push_back(sector(1, 1, 0, false));
    blocks.push_back(sector(-1, 1, 0, false));
    blocks.push_back(sector(1, -1, 0, false));
    blocks.push_back(sector(-1, -1, 0, false));
  }
  blocks.erase(std::remove_if(blocks.begin(), blocks.end(),
                              [](const Block& b) { return b.dim == 0; }),
               blocks.end());
  return blocks;
}

// Orthogonal projection of a quarter vector onto the S-even / S-odd part.
void project_sym(double* w, Index n, int sym) {
  for (Index i = 0; i < n; ++i) {
    if (sym < 0) w[i * n + i] = 0.0;
    for (Index j = i + 1; j < n; ++j) {
      const double a = w[i * n + j];
      const double b = w[j * n + i];
      const double s = 0.5 * (a + sym * b);
      w[i * n + j] = s;
      w[j * n + i] = sym * s;
    }
  }
}

// Calls f(q, i, c) for every nonzero entry c = P[i, q] of the map P from the
// quarter coordinates q of sector (px, py) to full-grid indices i ([iy, ix]).
template <class F>
void for_each_quarter_entry(int N, int px, int py, F&& f) {
  const Index ny = half_size(N, py), nx = half_size(N, px);
  for (Index a = 0; a < ny; ++a) {
    int cy;
    const auto yn = half_nodes(N, py, a, &cy);
    for (Index b = 0; b < nx; ++b) {
      int cx;
      const auto xn = half_nodes(N, px, b, &cx);
      for (int s = 0; s < cy; ++s)
        for (int t = 0; t < cx; ++t)
          f(a * nx + b, static_cast<Index>(yn[s].index) * N + xn[t].index,
            yn[s].coeff * xn[t].coeff);
    }
  }
}

// Full-grid vector (N x N, [iy, ix]) from quarter coordinates: full = P u.
void expand_quarter(int N, int px, int py, const double* u, double* full) {
  std::fill(full, full + static_cast<Index>(N) * N, 0.0);
  for_each_quarter_entry(N, px, py, [&](Index q, Index i, double c) { full[i] += c * u[q]; });
}

// Quarter coordinates of a full-grid vector: u = P^T full (the adjoint of expand_quarter).
void restrict_quarter(int N, int px, int py, const double* full, double* u) {
  std::fill(u, u + half_size(N, py) * half_size(N, px), 0.0);
  for_each_quarter_entry(N, px, py, [&](Index q, Index i, double c) { u[q] += c * full[i]; });
}

// ---------------------------------------------------------------------------
// Sector products y = P^T C P u on quarter coordinates.
class SectorOperator {
 public:
  virtual ~SectorOperator() = default;
  virtual void apply(const double* u, double* y) = 0;
};

// Through the circulant's real eigenbasis restricted to the sector:
// C_s = (B_y (x) B_x)^T diag(Lambda_sel) (B_y (x) B_x), four GEMMs per product.
class TrigSectorOperator final : public SectorOperator {
 public:
  TrigSectorOperator(const KleProblem& pr, const MatrixXd& lambda, int px, int py) {
    std::vector<int> fy, fx;
    MatrixXd By, Bx;
    trig_rows(pr.grid, py, &By, &fy);
    trig_rows(pr.grid, px, &Bx, &fx);
    By_ = By;
    ByT_ = By.transpose();
    Bx_ = Bx;
    BxT_ = Bx.transpose();
    lsel_.resize(static_cast<Index>(fy.size()), static_cast<Index>(fx.size()));
    for (std::size_t gy = 0; gy < fy.size(); ++gy)
      for (std::size_t gx = 0; gx < fx.size(); ++gx)
        lsel_(static_cast<Index>(gy), static_cast<Index>(gx)) = lambda(fy[gy], fx[gx]);
    ny_ = By_.cols();
    nx_ = Bx.cols();
  }
  void apply(const double* u, double* y) override {
    Eigen::Map<const RowMat> U(u, ny_, nx_);
    Eigen::Map<RowMat> Y(y, ny_, nx_);
    t1_.noalias() = U * BxT_;      // ny x Fx
    x_.noalias() = By_ * t1_;      // Fy x Fx
    x_.array() *= lsel_.array();
    t1_.noalias() = ByT_ * x_;     // ny x Fx
    Y.noalias() = t1_ * Bx_;       // ny x nx
  }

 private:
  RowMat By_, ByT_, BxT_, Bx_, lsel_, t1_, x_;
  Index ny_ = 0, nx_ = 0;
};

// Through the full-grid FFT product (for large N).
class FftSectorOperator final : public SectorOperator {
 public:
  FftSectorOperator(const KleProblem& pr, int px, int py)
      : N_(pr.grid), px_(px), py_(py), fft_(pr), full_(pr.size()), out_(pr.size()) {}
  void apply(const double* u, double* y) override {
    expand_quarter(N_, px_, py_, u, full_.data());
    fft_.apply(full_.data(), out_.data());
    restrict_quarter(N_, px_, py_, out_.data(), y);
  }

 private:
  int N_, px_, py_;
  KleCovarianceFFT fft_;
  VectorXd full_, out_;
};

std::unique_ptr<SectorOperator> make_operator(const KleProblem& pr, const MatrixXd& lambda,
                                              const Block& b, bool use_fft) {
  if (use_fft) return std::make_unique<FftSectorOperator>(pr, b.px, b.py);
  return std::make_unique<TrigSectorOperator>(pr, lambda, b.px, b.py);
}

// ---------------------------------------------------------------------------
// Dense block matrices (small blocks, or s close to N^2).

// Sector matrix P^T C P on quarter coordinates of sector (px, py).
MatrixXd sector_matrix(const KleProblem& pr, const MatrixXd& T, int px, int py) {
  const int N = pr.grid;
  struct Fold {
    int count = 0;
    std::array<int, 4> lag{};
    std::array<double, 4> w{};
  };
  auto folds = [N](int p) {
    const Index n = half_size(N, p);
    std::vector<Fold> f(static_cast<std::size_t>(n * n));
    for (Index a = 0; a < n; ++a) {
      int ca;
      const auto na = half_nodes(N, p, a, &ca);
      for (Index c = 0; c < n; ++c) {
        int cc;
        const auto nc = half_nodes(N, p, c, &cc);
        Fold& fo = f[static_cast<std::size_t>(a * n + c)];
        for (int s = 0; s < ca; ++s)
          for (int t = 0; t < cc; ++t) {
            const int lag = std::abs(na[s].index - nc[t].index);
            const double w = na[s].coeff * nc[t].coeff;
            int k = 0;
            while (k < fo.count && fo.lag[k] != lag) ++k;
            if (k == fo.count) {
              fo.lag[k] = lag;
              fo.w[k] = 0.0;
              ++fo.count;
            }
            fo.w[k] += w;
          }
      }
    }
    return f;
  };
  const auto fy = folds(py);
  const auto fx = folds(px);
  const Index ny = half_size(N, py), nx = half_size(N, px);
  const Index n = ny * nx;
  MatrixXd A(n, n);
  for (Index a = 0; a < ny; ++a)
    for (Index b = 0; b < nx; ++b) {
      const Index r = a * nx + b;
      for (Index c = 0; c < ny; ++c) {
        const Fold& Fy = fy[static_cast<std::size_t>(a * ny + c)];
        for (Index d = 0; d < nx; ++d) {
          const Index q = c * nx + d;
          if (q < r) continue;
          const Fold& Fx = fx[static_cast<std::size_t>(b * nx + d)];
          double v = 0.0;
          for (int s = 0; s < Fy.count; ++s)
            for (int t = 0; t < Fx.count; ++t) v += Fy.w[s] * Fx.w[t] * T(Fy.lag[s], Fx.lag[t]);
          A(r, q) = v;
          A(q, r) = v;
        }
      }
    }
  return A;
}

// Basis of an S block in quarter coordinates: entry (a, b) with a <= b (S-even)
// or a < b (S-odd): (e_ab + sym e_ba) / sqrt(2), or e_aa.
struct SymBasis {
  std::vector<std::array<Index, 2>> idx;
  std::vector<std::array<double, 2>> coeff;
  std::vector<int> count;
};

SymBasis sym_basis(Index n, int sym) {
  SymBasis B;
  for (Index a = 0; a < n; ++a)
    for (Index b = (sym > 0 ? a : a + 1); b < n; ++b) {
      if (a == b) {
        B.idx.push_back({a * n + a, a * n + a});
        B.coeff.push_back({1.0, 0.0});
        B.count.push_back(1);
      } else {
        B.idx.push_back({a * n + b, b * n + a});
        B.coeff.push_back({std::sqrt(0.5), sym * std::sqrt(0.5)});
        B.count.push_back(2);
      }
    }
  return B;
}

struct BlockSolution {
  VectorXd values;   // descending
  MatrixXd vectors;  // quarter coordinates (qsize x k)
  long matvecs = 0;
  long restarts = 0;
  bool dense = false;
  bool converged = true;
};

BlockSolution solve_dense(const KleProblem& pr, const MatrixXd& T, const Block& b, Index k) {
  MatrixXd A = sector_matrix(pr, T, b.px, b.py);
  SymBasis sb;
  if (b.sym != 0) {
    sb = sym_basis(b.nx, b.sym);
    const Index d = b.dim;
    MatrixXd R(d, d);
    for (Index i = 0; i < d; ++i)
      for (Index j = i; j < d; ++j) {
        double v = 0.0;
        for (int s = 0; s < sb.count[i]; ++s)
          for (int t = 0; t < sb.count[j]; ++t)
            v += sb.coeff[i][s] * sb.coeff[j][t] * A(sb.idx[i][s], sb.idx[j][t]);
        R(i, j) = v;
        R(j, i) = v;
      }
    A = std::move(R);
  }
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(A);
  if (es.info() != Eigen::Success) throw std::runtime_error("kle: dense eigensolver failed");
  const Index d = b.dim;
  k = std::min(k, d);
  BlockSolution out;
  out.dense = true;
  out.values.resize(k);
  out.vectors.setZero(b.qsize(), k);
  for (Index i = 0; i < k; ++i) {
    const Index col = d - 1 - i;
    out.values(i) = es.eigenvalues()(col);
    if (b.sym == 0) {
      out.vectors.col(i) = es.eigenvectors().col(col);
    } else {
      for (Index r = 0; r < d; ++r)
        for (int s = 0; s < sb.count[r]; ++s)
          out.vectors(sb.idx[r][s], i) += sb.coeff[r][s] * es.eigenvectors()(r, col);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Thick-restart Lanczos (Wu & Simon 2000) with full reorthogonalisation
// (classical Gram-Schmidt, twice), for the nev largest eigenpairs.
BlockSolution thick_restart_lanczos(Index n, Index nev, Index m, SectorOperator& op,
                                    const std::function<void(double*)>& project, VectorXd v0,
                                    double tol, int max_restarts, std::uint64_t seed) {
  BlockSolution out;
  MatrixXd V(n, m + 1);
  MatrixXd H = MatrixXd::Zero(m, m);
  VectorXd w(n), h, h2;
  if (project) project(v0.data());
  v0.normalize();
  V.col(0) = v0;
  Index k = 0;
  double anorm = 0.0;
  Eigen::SelfAdjointEigenSolver<MatrixXd> es;
  VectorXd theta(m);
  MatrixXd Y(m, m);
  for (;;) {
    double beta = 0.0;
    for (Index j = k; j < m; ++j) {
      op.apply(V.col(j).data(), w.data());
      ++out.matvecs;
      if (project) project(w.data());
      const auto Vj = V.leftCols(j + 1);
      h.noalias() = Vj.transpose() * w;
      w.noalias() -= Vj * h;
      h2.noalias() = Vj.transpose() * w;
      w.noalias() -= Vj * h2;
      h += h2;
      H.col(j).head(j + 1) = h;
      H.row(j).head(j + 1) = h.transpose();
      anorm = std::max(anorm, h.cwiseAbs().maxCoeff());
      beta = w.norm();
      if (beta <= 1e-14 * anorm) {
        // Invariant subspace: continue with a fresh direction, coupling 0.
        beta = 0.0;
        VectorXd r(n);
        for (Index i = 0; i < n; ++i)
          r(i) = uniform_pm_half(seed + 7919 * static_cast<std::uint64_t>(out.matvecs), static_cast<std::uint64_t>(i));
        if (project) project(r.data());
        for (int pass = 0; pass < 2; ++pass) r -= Vj * (Vj.transpose() * r);
        const double rn = r.norm();
        if (rn == 0.0) throw std::runtime_error("kle: Lanczos could not extend the basis");
        V.col(j + 1) = r / rn;
      } else {
        V.col(j + 1) = w / beta;
      }
      if (j + 1 < m) {
        H(j + 1, j) = beta;
        H(j, j + 1) = beta;
      }
    }
    es.compute(H);
    if (es.info() != Eigen::Success) throw std::runtime_error("kle: Ritz eigensolver failed");
    for (Index i = 0; i < m; ++i) {
      theta(i) = es.eigenvalues()(m - 1 - i);
      Y.col(i) = es.eigenvectors().col(m - 1 - i);
    }
    const double tmax = theta.cwiseAbs().maxCoeff();
    Index nconv = 0;
    bool all = true;
    for (Index i = 0; i < nev; ++i) {
      const bool ok = std::abs(beta * Y(m - 1, i)) <= tol * tmax;
      all = all && ok;
      nconv += ok ? 1 : 0;
    }
    if (all || out.restarts >= max_restarts) {
      out.converged = all;
      out.values = theta.head(nev);
      out.vectors.noalias() = V.leftCols(m) * Y.leftCols(nev);
      return out;
    }
    // Keep the wanted Ritz vectors plus a share of the next ones.
    const Index keep = std::min(m - 1, nev + std::max<Index>((m - nev) / 2, 1));
    MatrixXd Vk = V.leftCols(m) * Y.leftCols(keep);
    V.leftCols(keep) = Vk;
    V.col(keep) = V.col(m);
    H.setZero();
    for (Index i = 0; i < keep; ++i) {
      H(i, i) = theta(i);
      H(i, keep) = H(keep, i) = beta * Y(m - 1, i);
    }
    k = keep;
    ++out.restarts;
    (void)nconv;
  }
}

// ---------------------------------------------------------------------------
// Reflections of full-grid vectors (N x N, [iy, ix]).
void reflect(const double* v, double* out, int N, int which) {
  for (int iy = 0; iy < N; ++iy)
    for (int ix = 0; ix < N; ++ix) {
      Index src;
      if (which == 0) {
        src = static_cast<Index>(iy) * N + (N - 1 - ix);  // R_x
      } else if (which == 1) {
        src = static_cast<Index>(N - 1 - iy) * N + ix;  // R_y
      } else {
        src = static_cast<Index>(ix) * N + iy;  // S
      }
      out[static_cast<Index>(iy) * N + ix] = v[src];
    }
}

// Clusters of (near-)degenerate eigenvalues, formed greedily from the top: a
// cluster starts at the largest eigenvalue not yet assigned and takes every
// following one within tol * |head| of it (no chaining, so a cluster spans
// at most that much and the rotated pairs keep residuals <= tol * |head|).
// Returns the index of the last member of the cluster starting at `start`.
Index cluster_end(const std::vector<double>& desc, Index start, double tol) {
  const double head = desc[static_cast<std::size_t>(start)];
  Index end = start;
  while (end + 1 < static_cast<Index>(desc.size()) &&
         head - desc[static_cast<std::size_t>(end + 1)] <= tol * std::abs(head))
    ++end;
  return end;
}

VectorXd sign_vector(Index n) {
  VectorXd r(n);
  for (Index j = 0; j < n; ++j) r(j) = kle_sign_entry(j);
  return r;
}

void rule_split(const MatrixXd& W, int level, int N, bool use_swap, const VectorXd& r,
                std::vector<VectorXd>* out) {
  const Index d = W.cols();
  if (d == 1) {
    out->push_back(W.col(0));
    return;
  }
  if (level == 2 && !use_swap) level = 3;
  Eigen::SelfAdjointEigenSolver<MatrixXd> es;
  if (level >= 3) {
    MatrixXd M = W.transpose() * r.asDiagonal() * W;
    es.compute(0.5 * (M + M.transpose()));
    for (Index i = d - 1; i >= 0; --i) out->push_back(W * es.eigenvectors().col(i));
    return;
  }
  MatrixXd QW(W.rows(), d);
  for (Index c = 0; c < d; ++c) reflect(W.col(c).data(), QW.col(c).data(), N, level);
  MatrixXd M = W.transpose() * QW;
  es.compute(0.5 * (M + M.transpose()));
  const VectorXd& ev = es.eigenvalues();
  if ((ev.array().abs() < 0.5).any()) {  // span(W) is not invariant: rule not usable
    rule_split(W, level + 1, N, use_swap, r, out);
    return;
  }
  std::vector<Index> odd, even;
  for (Index i = 0; i < d; ++i) (ev(i) < 0 ? odd : even).push_back(i);
  for (const auto* group : {&odd, &even}) {
    if (group->empty()) continue;
    MatrixXd Yg(d, static_cast<Index>(group->size()));
    for (std::size_t c = 0; c < group->size(); ++c)
      Yg.col(static_cast<Index>(c)) = es.eigenvectors().col((*group)[c]);
    rule_split(W * Yg, level + 1, N, use_swap, r, out);
  }
}

}  // namespace

// ---------------------------------------------------------------------------
KleKernel parse_kle_kernel(const std::string& name) {
  if (name == "exponential") return KleKernel::exponential;
  if (name == "squared_exponential") return KleKernel::squared_exponential;
  throw std::invalid_argument("kle: kernel must be 'exponential' or 'squared_exponential'; got '" +
                              name + "'.");
}

KleMethod parse_kle_method(const std::string& name) {
  if (name == "auto") return KleMethod::automatic;
  if (name == "dense") return KleMethod::dense;
  if (name == "lanczos") return KleMethod::lanczos;
  throw std::invalid_argument("kle: method must be 'auto', 'dense' or 'lanczos'; got '" + name +
                              "'.");
}

KleMatvec parse_kle_matvec(const std::string& name) {
  if (name == "auto") return KleMatvec::automatic;
  if (name == "trig") return KleMatvec::trig;
  if (name == "fft") return KleMatvec::fft;
  throw std::invalid_argument("kle: matvec must be 'auto', 'trig' or 'fft'; got '" + name + "'.");
}

const char* kle_matvec_name(KleMatvec matvec) {
  switch (matvec) {
    case KleMatvec::trig: return "trig";
    case KleMatvec::fft: return "fft";
    case KleMatvec::automatic: break;
  }
  return "auto";
}

void KleProblem::validate() const {
  if (grid < 2 || grid > 8193)
    throw std::invalid_argument("kle: grid must be an integer in [2, 8193]; got " +
                                std::to_string(grid) + ".");
  auto positive = [](double v, const char* name) {
    if (!(std::isfinite(v) && v > 0.0))
      throw std::invalid_argument(std::string("kle: ") + name +
                                  " must be a finite float in (0, inf); got " + num(v) + ".");
  };
  positive(length_x, "length_x");
  positive(length_y, "length_y");
  positive(variance, "variance");
  if (!std::isfinite(variance * static_cast<double>(size())))
    throw std::invalid_argument("kle: variance * grid^2 (the trace of the covariance) must be "
                                "finite; got variance " + num(variance) + " on a grid of " +
                                std::to_string(grid) + ".");
}

MatrixXd kle_lag_table(const KleProblem& pr) {
  pr.validate();
  const int N = pr.grid;
  const double h = 1.0 / (N - 1);
  MatrixXd T(N, N);
  for (int dy = 0; dy < N; ++dy)
    for (int dx = 0; dx < N; ++dx) {
      const double u = dx * h / pr.length_x;
      const double v = dy * h / pr.length_y;
      const double r2 = u * u + v * v;
      const double k = pr.kernel == KleKernel::exponential ? std::exp(-std::sqrt(r2))
                                                           : std::exp(-0.5 * r2);
      T(dy, dx) = pr.variance * k;
    }
  return T;
}

MatrixXd kle_embedding_spectrum(const KleProblem& pr) {
  const MatrixXd T = kle_lag_table(pr);
  const int N = pr.grid;
  const long long M = 2LL * (N - 1);
  MatrixXd Cm(N, N);  // Cm(d, f) = w_d cos(2 pi f d / M)
  for (int d = 0; d < N; ++d) {
    const double w = (d == 0 || d == N - 1) ? 1.0 : 2.0;
    for (int f = 0; f < N; ++f) Cm(d, f) = w * cos_frac(static_cast<long long>(f) * d, M);
  }
  return Cm.transpose() * T * Cm;  // [fy, fx]
}

double kle_sign_entry(std::int64_t j) {
  const std::uint64_t v = (static_cast<std::uint64_t>(j + 1) * 2654435761ULL) & 0xFFFFFFFFULL;
  return static_cast<double>(v) / 4294967296.0 - 0.5;
}

double kle_sign_entry_fallback(std::int64_t j) {
  const std::uint64_t k = static_cast<std::uint64_t>(j + 1);
  const std::uint64_t v = ((k * k) * 2654435761ULL) & 0xFFFFFFFFULL;
  return static_cast<double>(v) / 4294967296.0 - 0.5;
}

// ---------------------------------------------------------------------------
struct KleCovarianceFFT::Impl {
  int N = 0;
  int M = 0;
  MatrixXd lambda;  // [fy, fx], fy, fx in 0..N-1
  Eigen::FFT<double> fft;
  std::vector<std::complex<double>> spec;  // N rows x N half-spectrum columns
  std::vector<double> row;
  std::vector<std::complex<double>> col_in, col_out;
};

KleCovarianceFFT::KleCovarianceFFT(const KleProblem& pr) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.N = pr.grid;
  d.M = 2 * (pr.grid - 1);
  d.lambda = kle_embedding_spectrum(pr);
  d.fft.SetFlag(Eigen::FFT<double>::HalfSpectrum);
  d.spec.resize(static_cast<std::size_t>(d.N) * d.N);
  d.row.resize(static_cast<std::size_t>(d.M));
  d.col_in.resize(static_cast<std::size_t>(d.M));
  d.col_out.resize(static_cast<std::size_t>(d.M));
}

KleCovarianceFFT::~KleCovarianceFFT() = default;

int KleCovarianceFFT::grid() const { return impl_->N; }

void KleCovarianceFFT::apply(const double* x, double* y) {
  Impl& d = *impl_;
  const int N = d.N, M = d.M;
  // Inputs of extreme magnitude are scaled by a power of two (exact) so
  // that the transforms neither overflow nor lose subnormal digits; others
  // (|x| within 2^+-400) go through unscaled, bit for bit as before.
  double amax = 0.0;
  for (Index i = 0; i < static_cast<Index>(N) * N; ++i) amax = std::max(amax, std::abs(x[i]));
  int shift = 0;
  if (std::isfinite(amax) && amax > 0.0) {
    const int e = std::ilogb(amax);
    if (e > 400 || e < -400) shift = e;
  }
  // Rows (x direction): real FFT of the zero-padded row, half spectrum fx = 0..N-1.
  for (int iy = 0; iy < N; ++iy) {
    std::copy(x + static_cast<Index>(iy) * N, x + static_cast<Index>(iy + 1) * N, d.row.begin());
    if (shift != 0)
      for (int ix = 0; ix < N; ++ix) d.row[ix] = std::ldexp(d.row[ix], -shift);
    std::fill(d.row.begin() + N, d.row.end(), 0.0);
    d.fft.fwd(&d.spec[static_cast<std::size_t>(iy) * N], d.row.data(), M);
  }
  // Columns (y direction): complex FFT, multiply by the embedding spectrum, back.
  for (int fx = 0; fx < N; ++fx) {
    for (int iy = 0; iy < N; ++iy) d.col_in[iy] = d.spec[static_cast<std::size_t>(iy) * N + fx];
    std::fill(d.col_in.begin() + N, d.col_in.end(), std::complex<double>(0.0, 0.0));
    d.fft.fwd(d.col_out.data(), d.col_in.data(), M);
    for (int fy = 0; fy < M; ++fy) d.col_out[fy] *= d.lambda(std::min(fy, M - fy), fx);
    d.fft.inv(d.col_in.data(), d.col_out.data(), M);
    for (int iy = 0; iy < N; ++iy) d.spec[static_cast<std::size_t>(iy) * N + fx] = d.col_in[iy];
  }
  for (int iy = 0; iy < N; ++iy) {
    d.fft.inv(d.row.data(), &d.spec[static_cast<std::size_t>(iy) * N], M);
    std::copy(d.row.begin(), d.row.begin() + N, y + static_cast<Index>(iy) * N);
  }
  if (shift != 0)
    for (Index i = 0; i < static_cast<Index>(N) * N; ++i) y[i] = std::ldexp(y[i], shift);
}

// ---------------------------------------------------------------------------
struct KleSectorProduct::Impl {
  std::unique_ptr<SectorOperator> op;
  Index size = 0;
};

KleSectorProduct::KleSectorProduct(const KleProblem& pr, int px, int py, KleMatvec kind)
    : impl_(std::make_unique<Impl>()) {
  pr.validate();
  if ((px != 1 && px != -1) || (py != 1 && py != -1))
    throw std::invalid_argument("KleSectorProduct: px and py must be +1 or -1");
  Block b;
  b.px = px;
  b.py = py;
  const bool fft =
      kind == KleMatvec::fft || (kind == KleMatvec::automatic && pr.grid > kTrigMaxGrid);
  impl_->op = make_operator(pr, fft ? MatrixXd() : kle_embedding_spectrum(pr), b, fft);
  impl_->size = half_size(pr.grid, px) * half_size(pr.grid, py);
}

KleSectorProduct::~KleSectorProduct() = default;

Index KleSectorProduct::size() const { return impl_->size; }

void KleSectorProduct::apply(const double* u, double* y) { impl_->op->apply(u, y); }

// ---------------------------------------------------------------------------
MatrixXd kle_cluster_rotation(const MatrixXd& V, int grid, bool use_swap) {
  if (grid < 2 || V.rows() != static_cast<Index>(grid) * grid || V.cols() < 1)
    throw std::invalid_argument("kle_cluster_rotation: V must have shape (grid^2, d >= 1)");
  const VectorXd r = sign_vector(V.rows());
  std::vector<VectorXd> cols;
  rule_split(V, 0, grid, use_swap, r, &cols);
  MatrixXd W(V.rows(), V.cols());
  for (std::size_t c = 0; c < cols.size(); ++c) W.col(static_cast<Index>(c)) = cols[c];
  MatrixXd Q = V.transpose() * W;
  // Re-orthonormalise (V has orthonormal columns up to rounding).
  Eigen::HouseholderQR<MatrixXd> qr(Q);
  MatrixXd Qo = qr.householderQ() * MatrixXd::Identity(Q.rows(), Q.cols());
  for (Index c = 0; c < Q.cols(); ++c)
    if (Qo.col(c).dot(Q.col(c)) < 0) Qo.col(c) = -Qo.col(c);
  return Qo;
}

// ---------------------------------------------------------------------------
// kle_solve, stage by stage.

namespace {

// What every stage of kle_solve shares: the unit-variance problem, the
// options and what is derived from them once.
struct SolveSetup {
  KleProblem pr;             // the problem with variance 1 (eigenvectors do not depend on it)
  const KleSolveOptions* opt = nullptr;
  bool use_fft = false;      // sector products through the FFT
  bool all_dense = false;    // every block solved densely (method dense, or s = N^2)
  MatrixXd T;                // lag table
  MatrixXd lambda;           // embedding spectrum (empty with FFT products)
  std::vector<Block> blocks;
};

// A computed eigenpair in the merged (descending) order.
struct MergedPair {
  double lambda;
  int block;
  Index idx;   // column of the block's solution
  int image;   // 1: the S-image of the block's vector
};

// The selected pairs as full-grid vectors, before the basis and sign rules.
struct ModeSet {
  RowMat modes;      // (sel, N^2)
  VectorXd values;   // (sel)
  VectorXd resid;    // (sel) bounds on ||C phi - lambda phi||
};

void validate_options(const KleProblem& pr, const KleSolveOptions& opt) {
  const Index n = pr.size();
  const Index s = opt.n_modes;
  if (s < 1 || s > n)
    throw std::invalid_argument("kle: n_modes must be an integer in [1, " + std::to_string(n) +
                                "]; got " + std::to_string(s) + ".");
  if (!(opt.tol > 0.0 && opt.tol < 1.0) || !(opt.check_tol > 0.0) || !(opt.cluster_tol >= 0.0))
    throw std::invalid_argument("kle: tol, check_tol must be in (0, 1), cluster_tol >= 0");
  if (opt.basis_size < 0 || opt.max_restarts < 0)
    throw std::invalid_argument("kle: basis_size and max_restarts must be >= 0");
}

SolveSetup make_setup(const KleProblem& problem, const KleSolveOptions& opt) {
  SolveSetup S;
  S.pr = problem;
  S.pr.variance = 1.0;
  S.opt = &opt;
  S.use_fft = opt.matvec == KleMatvec::fft ||
              (opt.matvec == KleMatvec::automatic && problem.grid > kTrigMaxGrid);
  S.all_dense = opt.method == KleMethod::dense || opt.n_modes == problem.size();
  S.T = kle_lag_table(S.pr);
  if (!S.use_fft) S.lambda = kle_embedding_spectrum(S.pr);
  S.blocks = make_blocks(S.pr);
  return S;
}

// Pairs wanted from each block in the first round: its share of s plus a margin.
std::vector<Index> initial_pair_counts(const SolveSetup& S) {
  const Index n = S.pr.size();
  const Index s = S.opt->n_modes;
  std::vector<Index> nev(S.blocks.size());
  for (std::size_t b = 0; b < S.blocks.size(); ++b) {
    const Index dim = S.blocks[b].dim;
    const double share = static_cast<double>(s) * dim / static_cast<double>(n);
    const Index want = static_cast<Index>(std::ceil(1.1 * share)) + 4;
    nev[b] = S.all_dense ? dim : std::min(dim, want);
  }
  return nev;
}

Index lanczos_basis_size(const KleSolveOptions& opt, const Block& b, Index k) {
  Index m = opt.basis_size > 0 ? static_cast<Index>(opt.basis_size)
                               : std::max<Index>(2 * k + 8, k + 24);
  m = std::max(m, k + 2);
  return std::min(m, b.dim);
}

bool block_uses_dense(const SolveSetup& S, const Block& b, Index k, Index m) {
  if (S.all_dense) return true;
  if (S.opt->method == KleMethod::lanczos) return m >= b.dim;  // Lanczos needs m < dim
  return b.dim <= kDenseMaxDim || 10 * k >= 3 * b.dim || m >= b.dim;
}

// The top `nev` pairs of block b, densely or by thick-restart Lanczos from a
// fixed pseudo-random start.
BlockSolution solve_block(const SolveSetup& S, std::size_t b, Index nev) {
  const Block& blk = S.blocks[b];
  const Index m = lanczos_basis_size(*S.opt, blk, nev);
  if (block_uses_dense(S, blk, nev, m)) return solve_dense(S.pr, S.T, blk, nev);
  auto op = make_operator(S.pr, S.lambda, blk, S.use_fft);
  std::function<void(double*)> project;
  if (blk.sym != 0) {
    const Index q = blk.nx;
    const int sym = blk.sym;
    project = [q, sym](double* w) { project_sym(w, q, sym); };
  }
  const std::uint64_t seed = 1000003ULL * (b + 1);
  VectorXd v0(blk.qsize());
  for (Index j = 0; j < v0.size(); ++j)
    v0(j) = uniform_pm_half(seed, static_cast<std::uint64_t>(j));
  return thick_restart_lanczos(blk.qsize(), nev, m, *op, project, v0, S.opt->tol,
                               S.opt->max_restarts, seed);
}

// One round: (re)solves every block marked in `todo`, largest work first,
// in parallel, and clears the marks.
void solve_round(const SolveSetup& S, const std::vector<Index>& nev, std::vector<char>* todo,
                 std::vector<BlockSolution>* sol, KleSolveResult* res) {
  std::vector<std::size_t> work;
  for (std::size_t b = 0; b < S.blocks.size(); ++b)
    if ((*todo)[b]) work.push_back(b);
  std::sort(work.begin(), work.end(), [&](std::size_t a, std::size_t c) {
    return S.blocks[a].dim * nev[a] > S.blocks[c].dim * nev[c];
  });
  parallel_for(work.size(), S.opt->threads, [&](std::size_t i, int) {
    const std::size_t b = work[i];
    (*sol)[b] = solve_block(S, b, nev[b]);
  });
  for (std::size_t b : work) {
    res->matvecs += (*sol)[b].matvecs;
    res->restarts += (*sol)[b].restarts;
  }
  std::fill(todo->begin(), todo->end(), 0);
}

// All computed pairs (S-images included), descending, ties in a fixed order.
std::vector<MergedPair> merge_pairs(const SolveSetup& S, const std::vector<BlockSolution>& sol) {
  std::vector<MergedPair> merged;
  for (std::size_t b = 0; b < S.blocks.size(); ++b)
    for (Index i = 0; i < sol[b].values.size(); ++i) {
      merged.push_back({sol[b].values(i), static_cast<int>(b), i, 0});
      if (S.blocks[b].image) merged.push_back({sol[b].values(i), static_cast<int>(b), i, 1});
    }
  std::sort(merged.begin(), merged.end(), [](const MergedPair& a, const MergedPair& c) {
    if (a.lambda != c.lambda) return a.lambda > c.lambda;
    if (a.block != c.block) return a.block < c.block;
    if (a.idx != c.idx) return a.idx < c.idx;
    return a.image < c.image;
  });
  return merged;
}

// Index of the last selected pair: the end of the cluster holding pair s - 1.
Index select_pairs(const std::vector<MergedPair>& merged, Index s, double cluster_tol) {
  if (static_cast<Index>(merged.size()) < s)
    throw std::runtime_error("kle: internal error, too few eigenpairs computed");
  std::vector<double> lam(merged.size());
  for (std::size_t i = 0; i < merged.size(); ++i) lam[i] = merged[i].lambda;
  Index last = -1;
  while (last < s - 1) last = cluster_end(lam, last + 1, cluster_tol);
  return last;
}

// Every block that is not exhausted must have its smallest computed
// eigenvalue strictly after the selected clusters; else it is asked for more
// pairs (marked in `todo`). Returns whether another round is needed.
bool request_more_pairs(const SolveSetup& S, const std::vector<BlockSolution>& sol,
                        const std::vector<MergedPair>& merged, Index last,
                        std::vector<Index>* nev, std::vector<char>* todo) {
  const std::size_t nb = S.blocks.size();
  std::vector<Index> pos_last(nb, -1);
  for (Index i = 0; i < static_cast<Index>(merged.size()); ++i) {
    const MergedPair& e = merged[static_cast<std::size_t>(i)];
    if (e.idx + 1 == sol[e.block].values.size())
      pos_last[e.block] = std::max(pos_last[e.block], i);
  }
  bool more = false;
  for (std::size_t b = 0; b < nb; ++b) {
    if (sol[b].values.size() >= S.blocks[b].dim) continue;
    if (pos_last[b] <= last) {
      (*nev)[b] = std::min(S.blocks[b].dim, (*nev)[b] + std::max<Index>((*nev)[b] / 2, 4));
      (*todo)[b] = 1;
      more = true;
    }
  }
  return more;
}

// The selected pairs as unit full-grid vectors, with explicit residuals from
// the sector products.
ModeSet assemble_modes(const SolveSetup& S, const std::vector<BlockSolution>& sol,
                       const std::vector<MergedPair>& merged, Index sel) {
  const int N = S.pr.grid;
  const Index n = S.pr.size();
  const std::size_t nb = S.blocks.size();
  ModeSet out;
  out.modes.resize(sel, n);
  out.values.resize(sel);
  out.resid.resize(sel);
  std::vector<std::vector<Index>> by_block(nb);
  for (Index i = 0; i < sel; ++i) by_block[merged[static_cast<std::size_t>(i)].block].push_back(i);
  parallel_for(nb, S.opt->threads, [&](std::size_t b, int) {
    if (by_block[b].empty()) return;
    const Block& blk = S.blocks[b];
    auto op = make_operator(S.pr, S.lambda, blk, S.use_fft);
    VectorXd y(blk.qsize()), full(n);
    for (Index i : by_block[b]) {
      const MergedPair& e = merged[static_cast<std::size_t>(i)];
      const auto u = sol[b].vectors.col(e.idx);
      op->apply(u.data(), y.data());
      out.resid(i) = (y - e.lambda * u).norm() / u.norm();
      out.values(i) = e.lambda;
      const double scale = 1.0 / u.norm();
      if (e.image == 0) {
        expand_quarter(N, blk.px, blk.py, u.data(), out.modes.row(i).data());
      } else {
        // S-image: sector (py, px) with the transposed quarter grid.
        expand_quarter(N, blk.px, blk.py, u.data(), full.data());
        reflect(full.data(), out.modes.row(i).data(), N, 2);
      }
      out.modes.row(i) *= scale;
    }
  });
  return out;
}

// docs/data.md §2 basis rule inside every (near-)degenerate cluster of the selected
// pairs (kle_cluster_rotation), with the rotated pairs' Rayleigh quotients
// and residual bounds. Returns the number of clusters of two or more pairs.
int apply_cluster_rule(const SolveSetup& S, ModeSet* m) {
  const Index sel = m->values.size();
  const std::vector<double> sel_values(m->values.data(), m->values.data() + sel);
  int clusters = 0;
  Index start = 0;
  while (start < sel) {
    const Index end = cluster_end(sel_values, start, S.opt->cluster_tol);
    const Index d = end - start + 1;
    if (d > 1) {
      ++clusters;
      const MatrixXd Vc = m->modes.middleRows(start, d).transpose();
      const MatrixXd Q = kle_cluster_rotation(Vc, S.pr.grid, S.pr.isotropic());
      const VectorXd lam = m->values.segment(start, d);
      const VectorXd rr = m->resid.segment(start, d);
      m->modes.middleRows(start, d) = (Vc * Q).transpose();
      const double lam_min = lam.minCoeff();
      for (Index i = 0; i < d; ++i) {
        // Rayleigh quotient, exact when the cluster's eigenvalues are equal.
        const VectorXd q2 = Q.col(i).cwiseAbs2();
        const double mu = lam_min + q2.dot((lam.array() - lam_min).matrix()) / q2.sum();
        m->values(start + i) = mu;
        m->resid(start + i) = Q.col(i).cwiseAbs().dot(rr) +
                              std::sqrt(q2.dot((lam.array() - mu).square().matrix()));
      }
    }
    start = end + 1;
  }
  return clusters;
}

// docs/data.md §2 sign rule r . phi > 0 on every row. Where r . phi vanishes exactly
// (r has exact integer relations, e.g. r_0 - r_1 - r_2 + r_3 = 0 decides
// nothing for the checkerboard mode of N = 2), the quadratic sequence r2
// decides instead.
void apply_sign_rule(RowMat* modes) {
  const Index n = modes->cols();
  const VectorXd r = sign_vector(n);
  VectorXd r2(n);
  for (Index j = 0; j < n; ++j) r2(j) = kle_sign_entry_fallback(j);
  const double tiny = 1e-10 * r.norm();
  for (Index i = 0; i < modes->rows(); ++i) {
    double p = modes->row(i).dot(r.transpose());
    if (std::abs(p) <= tiny) p = modes->row(i).dot(r2.transpose());
    if (p < 0) modes->row(i) *= -1.0;
  }
}

// ||C phi_i - lambda_i phi_i|| <= check_tol * lambda_1 for every returned pair.
void check_residuals(const KleSolveResult& res, double check_tol) {
  const double lam1 = res.eigenvalues.maxCoeff();
  Index worst = 0;
  res.residuals.maxCoeff(&worst);
  if (!(res.residuals(worst) <= check_tol * lam1)) {
    throw std::runtime_error("kle: eigenpair " + std::to_string(worst + 1) +
                             " failed the residual check: ||C v - lambda v|| = " +
                             num(res.residuals(worst)) + " > " + num(check_tol) +
                             " * lambda_1 = " + num(check_tol * lam1) + ".");
  }
}

}  // namespace

KleSolveResult kle_solve(const KleProblem& pr, const KleSolveOptions& opt) {
  pr.validate();
  validate_options(pr, opt);
  const SolveSetup S = make_setup(pr, opt);
  const Index s = opt.n_modes;
  const std::size_t nb = S.blocks.size();

  KleSolveResult res;
  res.blocks = static_cast<int>(nb);
  res.matvec = kle_matvec_name(S.use_fft ? KleMatvec::fft : KleMatvec::trig);

  // Rounds: solve the blocks that need it, merge, select the clusters that
  // hold the top s pairs, and ask blocks for more pairs until every block's
  // last computed pair lies beyond the selection.
  std::vector<Index> nev = initial_pair_counts(S);
  std::vector<BlockSolution> sol(nb);
  std::vector<char> todo(nb, 1);
  std::vector<MergedPair> merged;
  Index last = 0;
  for (;;) {
    ++res.rounds;
    solve_round(S, nev, &todo, &sol, &res);
    merged = merge_pairs(S, sol);
    last = select_pairs(merged, s, opt.cluster_tol);
    if (!request_more_pairs(S, sol, merged, last, &nev, &todo)) break;
  }

  ModeSet m = assemble_modes(S, sol, merged, last + 1);
  res.clusters = apply_cluster_rule(S, &m);

  res.eigenvalues = m.values.head(s);
  res.residuals = m.resid.head(s);
  res.modes = m.modes.topRows(s);
  apply_sign_rule(&res.modes);
  for (std::size_t b = 0; b < nb; ++b) res.dense_blocks += sol[b].dense ? 1 : 0;
  if (std::all_of(sol.begin(), sol.end(), [](const BlockSolution& x) { return x.dense; }))
    res.matvec = "dense";
  check_residuals(res, opt.check_tol);
  // Back to the problem's variance (exact scaling of the unit covariance).
  res.eigenvalues *= pr.variance;
  res.residuals *= pr.variance;
  res.trace = static_cast<double>(pr.size()) * pr.variance;
  return res;
}

}  // namespace darcyvae

// darcyvae: Darcy flow on the unit square (docs/data.md §1).
//
//   u = -K grad p,  div u = f,  u . n = 0 on the walls,  trapezoid mean of p = 0,
//
// on an N x N node grid (h = 1/(N-1), arrays [iy, ix] row-major), discretised
// by the paper's finite differences ("fd", docs/data.md §1a) or by conservative finite
// volumes with harmonic-mean transmissibilities ("fv", docs/data.md §1b). The gauge is
// imposed exactly through the bordered system
//
//   [[A, w], [w^T, 0]] [p; lambda] = [b; 0],   w the trapezoid weights,
//
// whose dense border is never factorised: the solver factorises the sparse,
// nonsingular M = A + c e_q e_q^T (q the last pivot, c = A_qq) and recovers
// the bordered solution exactly from two forward-eliminated right-hand sides
// (b and w): since A 1 = 0, M 1 = c e_q, which turns the 2 x 2 correction
// into lambda = y_b[q] / y_w[q], one back substitution of y_b - lambda y_w
// (whose q-th entry is 0) and a shift along the constants to zero mean.
//
// The factorisation is a supernodal LU (fd) or LDL^T (fv) without pivoting
// over a nested-dissection ordering computed once per (N, scheme) from the
// grid geometry (recursive separators, darcy.cpp): dense fronts, right-looking,
// each front's Schur complement added straight into its ancestors' rows.
// Only the numeric part runs per sample, on kLanes samples at once (one per
// SIMD lane, darcy_kernels.inc), with AVX2+FMA kernels chosen at run time.
// Each result is checked by its backward error and by the relative residual
// of the bordered system; a sample above either tolerance (a tiny pivot, say)
// is solved again by Eigen's SparseLU with partial pivoting, pinned at the
// node of largest diagonal. The bordered residual after that is reported per
// sample (solve's bordered_residual), so that the caller can refuse a sample
// that no method solved accurately (extreme permeability contrasts).
#pragma once

#include <Eigen/Sparse>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace darcyvae {

enum class DarcyScheme { fd, fv };

// "fd" or "fv"; anything else throws std::invalid_argument.
DarcyScheme parse_darcy_scheme(const std::string& name);
const char* darcy_scheme_name(DarcyScheme scheme);

// Instruction set of the numeric kernels: automatic (AVX2+FMA when built in
// and the CPU has both, else generic), avx2 (an error when unavailable) or
// generic (the build's baseline).
enum class KernelIsa { automatic, avx2, generic };
// "auto", "avx2" or "generic"; anything else throws std::invalid_argument.
KernelIsa parse_kernel_isa(const std::string& name);

// Default relative residual ||A p + lambda w - b||_2 / ||b||_2 of the
// bordered system above which a sample is re-solved with pivoting (and
// reported as inaccurate if it stays above).
constexpr double kDefaultResidualTolerance = 1e-6;

// docs/data.md §1 source, [iy, ix]: +rate in the square |x - ws/2| <= ws/2,
// |y - ws/2| <= ws/2 at (0, 0), -rate in the mirrored square at (1, 1).
// (A node within 1e-9 h of a well's edge counts as inside.)
std::vector<double> darcy_source(int grid, double well_width, double rate);

// Trapezoid weights (1 at corners, 2 on edges, 4 inside, times h^2/4), [iy, ix].
std::vector<double> darcy_gauge_weights(int grid);

// The scheme's matrix A (N^2 x N^2, row i = iy * N + ix) for permeability k.
// fd rows are pointwise (docs/data.md §1a); fv rows are integrated over the control
// volume, so the fv right-hand side is f * w (darcy_rhs).
Eigen::SparseMatrix<double, Eigen::RowMajor> darcy_matrix(const double* k, int grid,
                                                          DarcyScheme scheme);
// The scheme's right-hand side b for source f: f (fd) or f * w (fv).
std::vector<double> darcy_rhs(const double* source, int grid, DarcyScheme scheme);

// Seconds per sample spent in each stage (see DarcySolver::profile).
struct DarcyStageTimes {
  double assembly = 0;       // K interleaving and stencil coefficients
  double factorization = 0;  // front assembly, numeric LU / LDL^T, ancestor updates, forward elimination
  double solve = 0;          // Lagrange multiplier, back substitution, zero-mean shift
  double velocity = 0;       // velocities and output conversion
  double check = 0;          // residual and backward error
  double total = 0;
};

namespace detail {
struct DarcyPlan;
struct DarcyWorkspace;
struct Kernels;
}  // namespace detail

class DarcySolver {
 public:
  // grid >= 3. leaf_size: largest region (nodes) factorised as one dense
  // front, 0 for the default. block: panel width (1..64), 0 for the default.
  // check_tolerance: backward error above which a sample is re-solved with
  // partial pivoting (negative: always). residual_tolerance (> 0): relative
  // bordered residual above which a sample is re-solved likewise.
  DarcySolver(int grid, DarcyScheme scheme, int leaf_size = 0, int block = 0,
              KernelIsa isa = KernelIsa::automatic, double check_tolerance = 1e-10,
              double residual_tolerance = kDefaultResidualTolerance);
  ~DarcySolver();
  DarcySolver(const DarcySolver&) = delete;
  DarcySolver& operator=(const DarcySolver&) = delete;

  int grid() const;
  DarcyScheme scheme() const;
  const char* isa() const;
  int lanes() const;            // samples factorised together
  int leaf_size() const;
  int block() const;
  int fronts() const;           // number of fronts in the separator tree
  double factor_flops() const;  // dense flops of one sample's factorisation (model)
  std::size_t fallbacks() const;  // samples re-solved with pivoting so far
  double residual_tolerance() const;
  // Per-thread workspaces kept for the next call: at most the number of
  // hardware threads (more are freed when a call with more threads ends).
  std::size_t pooled_workspaces() const;
  // Nodes (iy * N + ix) in elimination order (the nested dissection); the
  // last one is the pinned node.
  std::vector<int> elimination_order() const;

  // Solves n samples: k holds n * N * N permeabilities ([sample, iy, ix]),
  // source N * N values of f, out n * 3 * N * N values (p, u_x, u_y).
  // lambda, relative_residual (||A p - b|| / ||b||, the scheme's own) and
  // bordered_residual (||A p + lambda w - b|| / ||b||, after any fallback;
  // inf or NaN where the pivoting solve failed outright, its output then
  // NaN) hold n values each and may be null. Threads as in parallel_for
  // (<= 0: all cores; capped at max_threads()). Thread-safe.
  void solve(const double* k, std::size_t n, const double* source, double* out, double* lambda,
             double* relative_residual, int threads, double* bordered_residual = nullptr) const;
  void solve(const double* k, std::size_t n, const double* source, float* out, double* lambda,
             double* relative_residual, int threads, double* bordered_residual = nullptr) const;

  // Median seconds per sample of each stage over `repeats` runs of one group
  // (lanes() samples taken from k, n >= 1, repeated if fewer) on this thread.
  DarcyStageTimes profile(const double* k, std::size_t n, const double* source,
                          int repeats) const;

 private:
  void solve_impl(const double* k, std::size_t n, const double* source, void* out, bool f32,
                  double* lambda, double* relative_residual, double* bordered_residual,
                  int threads) const;
  void fallback(const double* k, const double* rhs, void* out, bool f32, double* lambda,
                double* relative_residual, double* bordered_residual) const;
  std::unique_ptr<detail::DarcyWorkspace> acquire() const;
  void release(std::unique_ptr<detail::DarcyWorkspace> ws) const;

  int grid_;
  DarcyScheme scheme_;
  double check_tolerance_;
  double residual_tolerance_;
  std::unique_ptr<detail::DarcyPlan> plan_;
  std::unique_ptr<detail::Kernels> kernels_;
  std::vector<double> weights_;
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<detail::DarcyWorkspace>> pool_;
  mutable std::atomic<std::size_t> fallbacks_{0};
};

}  // namespace darcyvae

// darcyvae: Karhunen-Loeve expansion of a stationary Gaussian random field on
// the N x N unit-square grid (docs/data.md §2).
//
// The covariance C[a, b] = k(x_a - x_b, y_a - y_b) of a kernel that depends on
// (|dx|, |dy|) is block-Toeplitz with Toeplitz blocks. Two exact matrix-free
// products are provided, both through the circulant embedding of size
// M = 2(N - 1) in each direction (exact for kernels even in dx and dy):
//   - KleCovarianceFFT: C v on the full grid with real FFTs, O(N^2 log N);
//   - the symmetry-sector operators used by kle_solve: C commutes with the
//     reflections R_x (x -> 1 - x) and R_y (y -> 1 - y), so R^{N^2} splits into
//     four sectors (even/odd in x times even/odd in y) of about N^2 / 4 each.
//     The embedding's real cosine/sine eigenbasis restricted to a sector is a
//     pair of dense (about N x N/2) matrices, so a sector product is four small
//     matrix products, O(N^3) flops at GEMM speed (faster than the FFT up to a
//     few hundred nodes a side); for larger N the sector product goes through
//     the FFT instead.
// For an isotropic kernel C also commutes with the swap S (x <-> y): the
// even-even and odd-odd sectors split again into S-even and S-odd halves, and
// the odd-even sector is the S-image of the even-odd one (those are the exact
// degenerate pairs, lambda_2 = lambda_3). kle_solve computes the top-s
// eigenpairs of every block by thick-restart Lanczos with full
// reorthogonalisation (or a dense eigensolver for small blocks), merges them,
// and fixes the basis by the rules of docs/data.md §2 (degenerate clusters: R_x, then
// R_y, then S, then the hash vector; sign: r . phi > 0).
#pragma once

#include <Eigen/Dense>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "index.hpp"

namespace darcyvae {

static_assert(std::is_same<Index, Eigen::Index>::value,
              "darcyvae::Index must be Eigen::Index (both std::ptrdiff_t)");

enum class KleKernel { exponential, squared_exponential };

// "exponential" or "squared_exponential"; throws std::invalid_argument.
KleKernel parse_kle_kernel(const std::string& name);

// Eigensolver of the symmetry blocks: automatic (dense for small blocks and
// for blocks that want more than 30% of their pairs, else Lanczos), dense, or
// thick-restart Lanczos.
enum class KleMethod { automatic, dense, lanczos };
// "auto", "dense" or "lanczos"; throws std::invalid_argument.
KleMethod parse_kle_method(const std::string& name);

// Sector product of the Lanczos iterations: automatic (trig up to
// kTrigMaxGrid nodes a side, FFT above), trig (the embedding's real eigenbasis
// restricted to the sector, four small GEMMs) or fft (through
// KleCovarianceFFT).
enum class KleMatvec { automatic, trig, fft };
// "auto", "trig" or "fft"; throws std::invalid_argument.
KleMatvec parse_kle_matvec(const std::string& name);
const char* kle_matvec_name(KleMatvec matvec);

// The covariance: sigma^2 k(r), r^2 = (dx / length_x)^2 + (dy / length_y)^2,
// k = exp(-r) (exponential) or exp(-r^2 / 2) (squared exponential), on the
// grid x = ix h, y = iy h, h = 1 / (N - 1), flat index j = iy N + ix.
struct KleProblem {
  int grid = 65;
  KleKernel kernel = KleKernel::exponential;
  double length_x = 0.1;
  double length_y = 0.1;
  double variance = 1.0;

  // Throws std::invalid_argument for a grid outside [2, 8193], a length or
  // variance that is not finite and > 0, or a variance whose trace
  // (grid^2 variance) overflows.
  void validate() const;
  bool isotropic() const { return length_x == length_y; }
  Index size() const { return static_cast<Index>(grid) * grid; }
};

// Lag table T[dy, dx] = C between nodes dy rows and dx columns apart (N x N).
Eigen::MatrixXd kle_lag_table(const KleProblem& problem);

// Eigenvalues Lambda[fy, fx] (fx, fy in 0..N-1 = 0..M/2) of the circulant
// embedding of size M = 2(N - 1): the 2-D DFT of the even-extended lag table.
Eigen::MatrixXd kle_embedding_spectrum(const KleProblem& problem);

// Matrix-free C v on the full grid by FFT circulant embedding, O(N^2 log N).
// One object per thread (it keeps scratch space and FFT plans).
class KleCovarianceFFT {
 public:
  explicit KleCovarianceFFT(const KleProblem& problem);
  ~KleCovarianceFFT();
  KleCovarianceFFT(const KleCovarianceFFT&) = delete;
  KleCovarianceFFT& operator=(const KleCovarianceFFT&) = delete;
  // y = C x, x and y of length N^2 (may not alias). x of extreme magnitude
  // is scaled by a power of two internally; y is inf where C x itself
  // overflows.
  void apply(const double* x, double* y);
  int grid() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Product with one reflection sector of C (parities px, py: +1 even, -1 odd,
// in x and y) on its quarter-grid coordinates, the building block of
// kle_solve. kind: KleMatvec::trig or KleMatvec::fft (automatic picks by
// grid size as kle_solve does). One object per thread.
class KleSectorProduct {
 public:
  KleSectorProduct(const KleProblem& problem, int px, int py,
                   KleMatvec kind = KleMatvec::trig);
  ~KleSectorProduct();
  KleSectorProduct(const KleSectorProduct&) = delete;
  KleSectorProduct& operator=(const KleSectorProduct&) = delete;
  Index size() const;  // quarter-grid size n_y * n_x
  // y = P^T C P u, u and y of length size() (may not alias).
  void apply(const double* u, double* y);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The sign vector of docs/data.md §2: r_j = ((j + 1) * 2654435761 mod 2^32) / 2^32 - 0.5.
double kle_sign_entry(std::int64_t j);
// darcyvae's tie-break where |r . phi| <= 1e-10 ||r||:
// r2_j = ((j + 1)^2 * 2654435761 mod 2^32) / 2^32 - 0.5.
double kle_sign_entry_fallback(std::int64_t j);

struct KleSolveOptions {
  int n_modes = 100;
  KleMethod method = KleMethod::automatic;
  KleMatvec matvec = KleMatvec::automatic;  // sector products of the Lanczos iterations
  double tol = 1e-12;           // Lanczos: ||C v - theta v|| <= tol * theta_max(block)
  double check_tol = 1e-8;      // returned pairs: ||C v - lambda v|| <= check_tol * lambda_1
  double cluster_tol = 1e-8;    // cluster: eigenvalues within cluster_tol * |head| of its head
  int basis_size = 0;           // Lanczos basis size per block; 0 = automatic
  int max_restarts = 2000;      // per block and round
  int threads = 0;              // <= 0: all cores
};

struct KleSolveResult {
  Eigen::VectorXd eigenvalues;  // (s), descending up to the order rule inside clusters
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> modes;  // (s, N^2)
  Eigen::VectorXd residuals;    // (s) bounds on ||C phi_i - lambda_i phi_i||_2
  double trace = 0.0;           // trace(C) = N^2 sigma^2
  long matvecs = 0;             // sector products, all blocks
  long restarts = 0;            // Lanczos restarts, all blocks
  int rounds = 0;               // solve rounds (more when a block needed more pairs)
  int blocks = 0;               // symmetry blocks
  int dense_blocks = 0;         // blocks solved by the dense eigensolver
  int clusters = 0;             // (near-)degenerate clusters fixed by the basis rule
  std::string matvec;           // product used: "trig" or "fft" (or "dense")
};

// Top n_modes eigenpairs of the covariance with the docs/data.md §2 basis and sign
// rules. The eigenvectors do not depend on the variance: the solve runs on
// the unit-variance covariance and the eigenvalues and residuals are scaled
// by sigma^2 at the end (so tiny and huge variances lose no accuracy). Throws std::invalid_argument for bad input, std::runtime_error when a
// returned pair misses the residual check.
KleSolveResult kle_solve(const KleProblem& problem, const KleSolveOptions& options);

// docs/data.md §2 basis rule for one cluster: given orthonormal columns V (N^2 x d) of a
// (near-)degenerate eigenspace, returns the d x d orthogonal Q such that V Q
// is the rule's basis in the rule's order (R_x-odd first, then R_y-odd, then
// S-odd when `use_swap`, then by descending Rayleigh quotient of diag(r)).
// Signs are not fixed here.
Eigen::MatrixXd kle_cluster_rotation(const Eigen::MatrixXd& V, int grid, bool use_swap);

}  // namespace darcyvae

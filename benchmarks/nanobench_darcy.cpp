// nanobench microbenchmarks of the Darcy solver (default N = 65), per sample,
// one thread: darcyvae's solve and its stages (assembly, numeric
// refactorisation with the forward elimination, back substitution, velocity),
// next to the Eigen alternatives it was chosen over. Every alternative solves
// the same pinned system M = A + c e_q e_q^T with the same two right-hand
// sides (b and the gauge weights w) and the same bordered-system recovery,
// with its symbolic analysis done once outside the timed region; the
// relative difference of its pressure from darcyvae's is printed.
//
//   ./nanobench_darcy [N]
#include <nanobench.h>

#include <Eigen/IterativeLinearSolvers>
#include <Eigen/SparseCholesky>
#include <Eigen/SparseLU>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "darcy.hpp"

namespace {

using darcyvae::DarcyScheme;
using SpMat = Eigen::SparseMatrix<double>;

// exp of a smooth random field: 64 random Fourier modes, amplitudes decaying
// like an exponential covariance of length 0.1, scaled to unit variance.
std::vector<double> lognormal_field(int N, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.0, 2.0 * M_PI);
  std::vector<double> g(static_cast<std::size_t>(N) * N, 0.0);
  double var = 0;
  for (int m = 0; m < 64; ++m) {
    const double kx = 20.0 * normal(rng), ky = 20.0 * normal(rng), phase = uniform(rng);
    const double amp = std::pow(1.0 + 0.01 * (kx * kx + ky * ky), -0.75);
    var += amp * amp / 2;
    for (int iy = 0; iy < N; ++iy)
      for (int ix = 0; ix < N; ++ix)
        g[iy * N + ix] += amp * std::cos(kx * ix / (N - 1.0) + ky * iy / (N - 1.0) + phase);
  }
  for (double& v : g) v = std::exp(v / std::sqrt(var));
  return g;
}

// The bordered-system pressure from x_b = M^{-1} b and x_w = M^{-1} w.
Eigen::VectorXd recover(const Eigen::VectorXd& xb, const Eigen::VectorXd& xw,
                        const Eigen::VectorXd& w, int q) {
  const double lambda = xb[q] / xw[q];
  Eigen::VectorXd p = xb - lambda * xw;
  p.array() -= w.dot(p) / w.sum();
  return p;
}

double rel_diff(const Eigen::VectorXd& p, const std::vector<double>& out) {
  double num = 0, den = 0;
  for (int i = 0; i < p.size(); ++i) {
    num = std::max(num, std::abs(p[i] - out[i]));
    den = std::max(den, std::abs(out[i]));
  }
  return num / den;
}

}  // namespace

int main(int argc, char** argv) {
  const int N = argc > 1 ? std::atoi(argv[1]) : 65;
  const int n = N * N;
  std::mt19937_64 rng(1234);
  constexpr int kSamples = 4;
  std::vector<double> k;
  for (int s = 0; s < kSamples; ++s) {
    const std::vector<double> field = lognormal_field(N, rng);
    k.insert(k.end(), field.begin(), field.end());
  }
  const std::vector<double> f = darcyvae::darcy_source(N, 0.125, 10.0);
  const std::vector<double> wv = darcyvae::darcy_gauge_weights(N);
  const Eigen::Map<const Eigen::VectorXd> w(wv.data(), n);
  std::vector<double> out(static_cast<std::size_t>(kSamples) * 3 * n);

  for (DarcyScheme scheme : {DarcyScheme::fd, DarcyScheme::fv}) {
    const std::string name = darcyvae::darcy_scheme_name(scheme);
    darcyvae::DarcySolver solver(N, scheme);
    const int q = solver.elimination_order().back();
    const std::vector<double> bv = darcyvae::darcy_rhs(f.data(), N, scheme);
    Eigen::MatrixXd rhs(n, 2);
    rhs.col(0) = Eigen::Map<const Eigen::VectorXd>(bv.data(), n);
    rhs.col(1) = w;

    ankerl::nanobench::Bench bench;
    bench.title("Darcy " + name + ", N = " + std::to_string(N) + ", one thread")
        .unit("sample")
        .warmup(2)
        .minEpochIterations(5)
        .relative(true);

    bench.batch(kSamples).run("darcyvae: solve (assembly .. velocity)", [&] {
      solver.solve(k.data(), kSamples, f.data(), out.data(), nullptr, nullptr, 1);
      ankerl::nanobench::doNotOptimizeAway(out[0]);
    });
    const darcyvae::DarcyStageTimes t = solver.profile(k.data(), kSamples, f.data(), 51);
    std::printf(
        "darcyvae %s stages (median of 51, ms per sample): assembly %.4f, factorisation %.4f "
        "(%.1f GF/s over %.2f Mflop), solve %.4f, velocity %.4f, check %.4f, total %.4f; "
        "kernels %s\n",
        name.c_str(), t.assembly * 1e3, t.factorization * 1e3,
        solver.factor_flops() / t.factorization / 1e9, solver.factor_flops() / 1e6,
        t.solve * 1e3, t.velocity * 1e3, t.check * 1e3, t.total * 1e3, solver.isa());

    // Eigen alternatives, on sample 0.
    Eigen::SparseMatrix<double, Eigen::RowMajor> A;
    bench.batch(1).run("Eigen: assemble A (darcy_matrix)", [&] {
      A = darcyvae::darcy_matrix(k.data(), N, scheme);
      ankerl::nanobench::doNotOptimizeAway(A.nonZeros());
    });
    SpMat M = A;
    M.coeffRef(q, q) += A.coeff(q, q);
    M.makeCompressed();

    // The same matrix in darcyvae's nested-dissection order.
    const std::vector<int> order = solver.elimination_order();
    Eigen::VectorXi inv(n);
    for (int i = 0; i < n; ++i) inv[order[i]] = i;
    const Eigen::PermutationMatrix<Eigen::Dynamic, Eigen::Dynamic, int> perm(inv);
    const SpMat Mnd = perm * M * perm.transpose();
    const Eigen::MatrixXd rhs_nd = perm * rhs;

    auto check = [&](const char* label, const Eigen::MatrixXd& x, bool nd) {
      const Eigen::MatrixXd y = nd ? Eigen::MatrixXd(perm.transpose() * x) : x;
      std::printf("  %-44s max |p - p_darcyvae| / max |p| = %.1e\n", label,
                  rel_diff(recover(y.col(0), y.col(1), w, q), out));
    };

    Eigen::MatrixXd x;
    {
      Eigen::SparseLU<SpMat, Eigen::COLAMDOrdering<int>> lu;
      lu.analyzePattern(M);
      bench.run("Eigen SparseLU, COLAMD: refactorise + 2 solves", [&] {
        lu.factorize(M);
        x = lu.solve(rhs);
      });
      check("SparseLU COLAMD", x, false);
    }
    {
      Eigen::SparseLU<SpMat, Eigen::NaturalOrdering<int>> lu;
      lu.analyzePattern(Mnd);
      bench.run("Eigen SparseLU, darcyvae ND order: refactorise + 2 solves", [&] {
        lu.factorize(Mnd);
        x = lu.solve(rhs_nd);
      });
      check("SparseLU ND", x, true);
    }
    if (scheme == DarcyScheme::fv) {
      {
        Eigen::SimplicialLDLT<SpMat, Eigen::Lower, Eigen::AMDOrdering<int>> ldlt;
        ldlt.analyzePattern(M);
        bench.run("Eigen SimplicialLDLT, AMD: refactorise + 2 solves", [&] {
          ldlt.factorize(M);
          x = ldlt.solve(rhs);
        });
        check("SimplicialLDLT AMD", x, false);
      }
      {
        Eigen::SimplicialLDLT<SpMat, Eigen::Lower, Eigen::NaturalOrdering<int>> ldlt;
        ldlt.analyzePattern(Mnd);
        bench.run("Eigen SimplicialLDLT, darcyvae ND order: refactorise + 2 solves", [&] {
          ldlt.factorize(Mnd);
          x = ldlt.solve(rhs_nd);
        });
        check("SimplicialLDLT ND", x, true);
      }
      {
        Eigen::ConjugateGradient<SpMat, Eigen::Lower | Eigen::Upper,
                                 Eigen::IncompleteCholesky<double>>
            cg;
        cg.setTolerance(1e-12);
        cg.analyzePattern(M);
        bench.run("Eigen CG + IncompleteCholesky to 1e-12: setup + 2 solves", [&] {
          cg.factorize(M);
          x = cg.solve(rhs);
        });
        check("CG + IC(0)", x, false);
      }
    } else {
      Eigen::BiCGSTAB<SpMat, Eigen::IncompleteLUT<double>> bicg;
      bicg.setTolerance(1e-12);
      bicg.analyzePattern(M);
      bench.run("Eigen BiCGSTAB + ILUT to 1e-12: setup + 2 solves", [&] {
        bicg.factorize(M);
        x = bicg.solve(rhs);
      });
      check("BiCGSTAB + ILUT", x, false);
    }
  }
  return 0;
}

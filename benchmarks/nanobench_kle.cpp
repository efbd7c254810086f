// nanobench: the KLE core in C++ (no Python). The covariance products (full
// grid by FFT, one reflection sector by the trigonometric GEMM form and by the
// FFT) at N = 65, 129, 257, and kle_solve at N = 65, s = 100.
//
// Build by hand (benchmarks/CMakeLists.txt globs nanobench_*.cpp otherwise):
//   g++ -O2 -std=c++17 -I cpp -I /work/nanobench-src/src/include -I <eigen3>
//       benchmarks/nanobench_kle.cpp cpp/kle.cpp cpp/parallel.cpp -lpthread
#define ANKERL_NANOBENCH_IMPLEMENT
#include <nanobench.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kle.hpp"

namespace nb = ankerl::nanobench;

int main() {
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> normal;

  nb::Bench products;
  products.title("KLE covariance products").unit("product").warmup(3).minEpochIterations(20);
  for (int n : {65, 129, 257}) {
    darcyvae::KleProblem pr;
    pr.grid = n;
    std::vector<double> x(static_cast<std::size_t>(n) * n), y(x.size());
    for (double& v : x) v = normal(rng);
    darcyvae::KleCovarianceFFT full(pr);
    products.run("full grid, FFT, N=" + std::to_string(n), [&] {
      full.apply(x.data(), y.data());
      nb::doNotOptimizeAway(y[0]);
    });
    for (const darcyvae::KleMatvec matvec : {darcyvae::KleMatvec::trig, darcyvae::KleMatvec::fft}) {
      const std::string kind = darcyvae::kle_matvec_name(matvec);
      darcyvae::KleSectorProduct sector(pr, -1, 1, matvec);
      std::vector<double> u(static_cast<std::size_t>(sector.size())), w(u.size());
      for (double& v : u) v = normal(rng);
      products.run("odd-even sector, " + kind + ", N=" + std::to_string(n), [&] {
        sector.apply(u.data(), w.data());
        nb::doNotOptimizeAway(w[0]);
      });
    }
  }

  nb::Bench solve;
  solve.title("kle_solve, N = 65").unit("solve").warmup(1).minEpochIterations(5).epochs(5);
  darcyvae::KleProblem pr;
  for (int threads : {1, 2}) {
    darcyvae::KleSolveOptions opt;
    opt.n_modes = 100;
    opt.threads = threads;
    solve.run("s=100, threads=" + std::to_string(threads), [&] {
      const auto r = darcyvae::kle_solve(pr, opt);
      nb::doNotOptimizeAway(r.eigenvalues(0));
    });
  }
  darcyvae::KleSolveOptions opt;
  opt.n_modes = 100;
  const auto r = darcyvae::kle_solve(pr, opt);
  std::printf("s=100: %ld sector products, %ld restarts, %d clusters, product %s\n", r.matvecs,
              r.restarts, r.clusters, r.matvec.c_str());
  return 0;
}

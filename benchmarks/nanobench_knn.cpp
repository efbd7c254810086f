// nanobench: the k-NN core of darcyvae.metrics (cpp/knn_kl.hpp), linked to
// darcyvae_core directly. n = 65536 points of N(0, I_2): tree build, k = 1
// queries (in the given random order and in tree order), and the two KL
// estimators (one divergence() call = n queries, one thread).
//
//   cmake -DDARCYVAE_BUILD_BENCHMARKS=ON ... && ./nanobench_knn
// or by hand:
//   g++ -O2 -std=c++17 -I cpp -I <nanobench>/src/include -I <eigen3>
//       benchmarks/nanobench_knn.cpp cpp/knn_kl.cpp cpp/parallel.cpp -lpthread
#define ANKERL_NANOBENCH_IMPLEMENT
#include <nanobench.h>

#include <cstdio>
#include <random>
#include <vector>

#include "knn_kl.hpp"

int main() {
  using darcyvae::Index;
  constexpr Index n = 65536;
  constexpr Index d = 2;
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(n * d)), y(x.size());
  for (double& v : x) v = normal(rng);
  for (double& v : y) v = 0.3 + 1.2 * normal(rng);

  ankerl::nanobench::Bench bench;
  bench.title("darcyvae knn_kl, n = 65536, d = 2, 1 thread").warmup(1).minEpochIterations(20);

  bench.run("KDTree build", [&] {
    darcyvae::KDTree t(y.data(), n, d);
    ankerl::nanobench::doNotOptimizeAway(t.depth());
  });

  const darcyvae::KDTree ytree(y.data(), n, d);
  std::vector<double> dist(static_cast<std::size_t>(n));
  bench.batch(n).unit("query");
  bench.run("k=1 query, random order", [&] {
    ytree.knn(x.data(), n, 1, nullptr, nullptr, dist.data(), nullptr, 1);
    ankerl::nanobench::doNotOptimizeAway(dist[0]);
  });
  const darcyvae::KDTree xtree(x.data(), n, d);  // its points() are x in tree order
  bench.run("k=1 query, tree order", [&] {
    ytree.knn(xtree.points(), n, 1, nullptr, nullptr, dist.data(), nullptr, 1);
    ankerl::nanobench::doNotOptimizeAway(dist[0]);
  });

  const darcyvae::KLEstimator fixed(x.data(), n, d, 1, darcyvae::KLMethod::fixed, 8, 1);
  const darcyvae::KLEstimator adaptive(x.data(), n, d, 1, darcyvae::KLMethod::adaptive, 8, 1);
  bench.run("fixed-k divergence", [&] {
    const auto v = fixed.divergence(ytree, nullptr, nullptr, nullptr, false, 0.0, 1);
    ankerl::nanobench::doNotOptimizeAway(v.value);
  });
  bench.run("adaptive divergence", [&] {
    const auto v = adaptive.divergence(ytree, nullptr, nullptr, nullptr, false, 0.0, 1);
    ankerl::nanobench::doNotOptimizeAway(v.value);
  });
  const double a[2] = {1.1, -0.9};
  const double b[2] = {0.2, -0.1};
  bench.run("fixed-k divergence, weighted (S_KL)", [&] {
    const auto v = fixed.divergence(ytree, a, b, nullptr, false, 0.01, 1);
    ankerl::nanobench::doNotOptimizeAway(v.value);
  });
  std::printf("D fixed = %.15f, adaptive = %.15f\n",
              fixed.divergence(ytree, nullptr, nullptr, nullptr, false, 0.0, 1).value,
              adaptive.divergence(ytree, nullptr, nullptr, nullptr, false, 0.0, 1).value);
  return 0;
}

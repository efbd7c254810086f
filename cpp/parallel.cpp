#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace darcyvae {

namespace {

int hardware_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(std::min(hw, 1u << 20));
}

}  // namespace

int max_threads() { return std::max(4, std::min(4 * hardware_threads(), 256)); }

int resolve_threads(int threads) {
  return std::min(threads > 0 ? threads : hardware_threads(), max_threads());
}

int workers_for(std::size_t n, int threads) {
  const auto t = static_cast<std::size_t>(resolve_threads(threads));
  return static_cast<int>(std::max<std::size_t>(1, std::min(t, n)));
}

void parallel_for(std::size_t n, int threads,
                  const std::function<void(std::size_t, int)>& fn,
                  std::size_t grain) {
  if (n == 0) return;
  grain = std::max<std::size_t>(grain, 1);
  const int nworkers = workers_for(n, threads);
  if (nworkers == 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](int worker) {
    while (!failed.load(std::memory_order_relaxed)) {
      const std::size_t begin = next.fetch_add(grain, std::memory_order_relaxed);
      if (begin >= n) break;
      const std::size_t end = std::min(n, begin + grain);
      try {
        for (std::size_t i = begin; i < end; ++i) fn(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  std::vector<std::thread> pool;
  std::string start_error;
  try {
    pool.reserve(static_cast<std::size_t>(nworkers - 1));
    for (int w = 1; w < nworkers; ++w) pool.emplace_back(work, w);
  } catch (const std::system_error& e) {
    start_error = "could not start worker thread " + std::to_string(pool.size() + 2) + " of " +
                  std::to_string(nworkers) + " (" + e.what() +
                  "); the system is out of threads or memory: use fewer threads";
    failed.store(true, std::memory_order_relaxed);
  } catch (const std::bad_alloc&) {
    start_error = "could not start " + std::to_string(nworkers) +
                  " worker threads (out of memory): use fewer threads";
    failed.store(true, std::memory_order_relaxed);
  }
  if (start_error.empty()) work(0);
  for (auto& t : pool) t.join();
  if (!start_error.empty()) throw std::runtime_error(start_error);
  if (error) std::rethrow_exception(error);
}

}  // namespace darcyvae

// darcyvae: a small std::thread work-sharing loop shared by every capability.
//
// No OpenMP on purpose: torch ships its own libgomp, and two OpenMP runtimes
// in one process is a known source of crashes and oversubscription.
#pragma once

#include <cstddef>
#include <functional>

namespace darcyvae {

// Largest number of worker threads any call uses: 4 x the hardware threads,
// at most 256 (and at least 4). More threads than cores never speed up the
// CPU-bound loops of the core, and every worker may hold a workspace (the
// Darcy solver's is 7 MB at N = 65), so a request such as threads = 1000 is
// quietly reduced to this. Results never depend on the thread count.
int max_threads();

// Number of worker threads to use: threads if > 0, else all hardware threads
// (at least 1); in both cases at most max_threads().
int resolve_threads(int threads);

// Calls fn(i, worker) for every i in [0, n), spread over `threads` workers
// (resolved by resolve_threads, never more than n). Indices are handed out
// dynamically in blocks of `grain`, so uneven work balances. `worker` is in
// [0, number of workers) and lets callers keep per-thread scratch space.
// The first exception thrown by fn stops the hand-out of new indices and is
// rethrown on the calling thread after all workers have joined. When the
// system refuses to start a worker thread (std::system_error, e.g. under a
// memory or process limit), the threads already started are stopped and
// joined and a std::runtime_error saying so is thrown: never std::terminate.
void parallel_for(std::size_t n, int threads,
                  const std::function<void(std::size_t i, int worker)>& fn,
                  std::size_t grain = 1);

// Number of workers parallel_for(n, threads, ...) will start.
int workers_for(std::size_t n, int threads);

}  // namespace darcyvae

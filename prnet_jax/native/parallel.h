// Shared by the native kernels: a parallel loop over work items on XLA's CPU thread pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace prnet_native {

// Runs `fn(item)` for items [0, count) on the caller and the pool's threads; returns when all
// are done. Helpers that start after the work is gone return at once; the shared state outlives
// the call, so a helper scheduled late never touches freed memory.
template <typename F>
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t count, F fn) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  auto work = std::make_shared<F>(std::move(fn));
  auto run = [state, work, count]() {
    int64_t finished = 0;
    for (int64_t item; (item = state->next.fetch_add(1)) < count;) {
      (*work)(item);
      ++finished;
    }
    if (finished && state->done.fetch_add(finished) + finished == count) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->cv.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t k = 0; k < helpers; ++k) pool.Schedule(decltype(run)(run));
  run();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == count; });
}

}  // namespace prnet_native

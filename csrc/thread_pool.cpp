#include "thread_pool.h"

#include <sched.h>

#include <fstream>
#include <set>
#include <string>

namespace kt {

void SpinBarrier::wait() {
    const unsigned phase = phase_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
        arrived_.store(0, std::memory_order_relaxed);
        phase_.store(phase + 1, std::memory_order_release);
        return;
    }
    for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
        if (spins < 20000) __builtin_ia32_pause();
        else std::this_thread::yield();
    }
}

ThreadPool::ThreadPool(int n_threads) {
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int tid) {
    unsigned seen = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mu_);
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
        }
        if (team_) (*fn_)(tid);
        else
            for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_;) (*fn_)(i);
        std::lock_guard<std::mutex> lock(mu_);
        if (--busy_ == 0) done_.notify_one();
    }
}

void ThreadPool::start(const std::function<void(int)>* fn, int n_tasks, bool team) {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    n_tasks_ = n_tasks;
    team_ = team;
    next_.store(0, std::memory_order_relaxed);
    busy_ = int(workers_.size());
    ++generation_;
}

void ThreadPool::parallel_for(int n_tasks, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> call(call_mu_);
    if (workers_.empty() || n_tasks <= 1) {
        for (int i = 0; i < n_tasks; ++i) fn(i);
        return;
    }
    start(&fn, n_tasks, false);
    wake_.notify_all();
    for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_tasks_;) fn(i);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return busy_ == 0; });
    fn_ = nullptr;
}

void ThreadPool::run_team(const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> call(call_mu_);
    if (workers_.empty()) return fn(0);
    start(&fn, size(), true);
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return busy_ == 0; });
    fn_ = nullptr;
}

int default_thread_count() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        unsigned n = std::thread::hardware_concurrency();
        return n ? int(n) : 1;
    }
    std::set<std::string> cores;  // one entry per physical core: its SMT sibling list
    int logical = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (!CPU_ISSET(cpu, &set)) continue;
        ++logical;
        std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
        std::string siblings;
        cores.insert(f && std::getline(f, siblings) ? siblings : std::to_string(cpu));
    }
    return cores.empty() ? (logical ? logical : 1) : int(cores.size());
}

}  // namespace kt

// A fixed set of std::thread workers that sleep on a condition variable when idle.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kt {

// Threads of one team wait here for each other between the steps of a fused
// forward. It spins (the wait is microseconds while all threads compute) and
// yields the core after a while, so a preempted teammate can run.
class SpinBarrier {
public:
    explicit SpinBarrier(int n) : n_(n) {}
    void wait();

private:
    const int n_;
    std::atomic<int> arrived_{0};
    std::atomic<unsigned> phase_{0};
};

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return int(workers_.size()) + 1; }  // the caller works too
    // fn(i) for every i in [0, n_tasks), spread over the workers and the calling
    // thread; returns when all are done. Calls from several threads take turns.
    void parallel_for(int n_tasks, const std::function<void(int)>& fn);
    // fn(tid) once on each of the size() threads at the same time (tid 0 is the
    // caller), so fn may synchronise its threads with a SpinBarrier of size().
    void run_team(const std::function<void(int)>& fn);

private:
    void worker_loop(int tid);
    void start(const std::function<void(int)>* fn, int n_tasks, bool team);

    std::vector<std::thread> workers_;
    std::mutex call_mu_;  // one parallel_for at a time
    std::mutex mu_;
    std::condition_variable wake_, done_;
    const std::function<void(int)>* fn_ = nullptr;
    int n_tasks_ = 0;
    bool team_ = false;
    std::atomic<int> next_{0};
    int busy_ = 0;        // workers still inside the current generation
    unsigned generation_ = 0;
    bool stop_ = false;
};

int default_thread_count();  // physical cores in this process's affinity mask

}  // namespace kt

// The seed's fork-snapshot benchmark (shared/seeds/000: "Kernel copying CoW pages
// after child process exit"), with the fork replaced by pagesnap.
//
//   c++ -std=c++17 -O2 -pthread seed_benchmark.cpp $(pkg-config --cflags --libs pagesnap)
//   ./a.out [MiB=1024] [workers=28]          # pagesnap mode
//   add -DWITH_FORK for the seed's fork mode, as the seed wrote it
//
// Both modes fill an array with 123, take a consistent snapshot of it, and let
// worker threads overwrite the array while checkpointer threads copy the snapshot
// out; "duration" is the workers' time, as in the seed. Each mode then checks that
// the copy holds the array as it was at the snapshot (all 123) and prints
// "snapshot verified".
//
// pagesnap mode: ps_background_snapshot() write-protects the region and returns;
// the workers start at once, a copier thread saves the pages (a worker touching a
// 2 MiB batch not yet saved waits for it), and the checkpointers copy the finished
// snapshot out. No child process, no page-table copy.
// -DPAGESNAP_SYNC_SNAPSHOT instead takes a synchronous ps_snapshot_take() before
// the workers start (timed and printed as "snapshot (s)").
//
// Changes from the seed: sizes come from argv, the numa headers (unused) are
// dropped, and waitpid's result is checked correctly.

#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "pagesnap.h"

#define NUM_CHECKPOINTERS 4
#define BATCH_SIZE 2097152  // 2MB

using inttype = uint64_t;
using timepoint = std::chrono::time_point<std::chrono::high_resolution_clock>;

static size_t ARRAY_SIZE = 1073741824;  // 1GB; argv[1] in MiB
static size_t NUM_WORKERS = 28;         // argv[2]

static size_t num_elems() { return ARRAY_SIZE / sizeof(inttype); }

static double since(timepoint t) {
  return std::chrono::duration<double>(std::chrono::high_resolution_clock::now() - t).count();
}

static bool all_123(const inttype* a, size_t n) {
  return std::all_of(a, a + n, [](inttype v) { return v == 123; });
}

// The seed's workers: thread tid writes every NUM_WORKERS-th element.
static std::vector<std::thread> start_workers(inttype* array) {
  std::vector<std::thread> threads;
  for (size_t tid = 0; tid < NUM_WORKERS; tid++) {
    threads.emplace_back([array, tid] {
      for (size_t i = tid; i < num_elems(); i += NUM_WORKERS) array[i] = tid;
    });
  }
  return threads;
}

#ifdef WITH_FORK
static int run() {
  inttype* array = new inttype[num_elems()]();  // allocate array
  inttype* cp = new inttype[num_elems()]();     // allocate checkpoint space
  std::fill(array, array + num_elems(), 123);   // initialize array

  fflush(stdout);
  int pid = fork();
  if (pid == -1) {
    perror("fork");
    exit(-1);
  }
  // child process -- do checkpoint
  if (pid == 0) {
    std::vector<std::thread> cpthreads;
    for (size_t tid = 0; tid < NUM_CHECKPOINTERS; tid++) {
      cpthreads.emplace_back([&, tid] {
        const size_t batch = std::min<size_t>(BATCH_SIZE, ARRAY_SIZE);
        const size_t numBatches = ARRAY_SIZE / batch;
        for (size_t i = tid; i < numBatches; i += NUM_CHECKPOINTERS) {
          char* src = reinterpret_cast<char*>(array) + i * batch;
          char* dst = reinterpret_cast<char*>(cp) + i * batch;
          memcpy(dst, src, batch);
          munmap(src, batch);  // as the seed does (fails harmlessly if unaligned)
        }
      });
    }
    for (std::thread& thread : cpthreads) thread.join();
    bool ok = all_123(cp, num_elems());
    printf("CP finished successfully! Child exiting.\n%s\n",
           ok ? "snapshot verified" : "SNAPSHOT WRONG");
    exit(ok ? 0 : 1);
  }

  std::vector<std::thread> threads = start_workers(array);  // spawn worker threads
  timepoint tStart = std::chrono::high_resolution_clock::now();
  int child_status = -1;
  // allow reaping child process while workers work
  std::thread childWaitThread([&] {
    if (waitpid(pid, &child_status, 0) != pid) perror("waitpid");
    printf("reunited with child after (s): %lf\n", since(tStart));
  });
  for (std::thread& thread : threads) thread.join();  // wait for workers to finish
  printf("duration (s): %lf\n", since(tStart));
  childWaitThread.join();
  return WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0 ? 0 : 1;
}
#else
static void die(const char* what) {
  fprintf(stderr, "%s: %s\n", what, ps_last_error());
  exit(1);
}

static int run() {
  ps_store* store = ps_store_new();
  if (!store) die("ps_store_new");
  ps_region* region = ps_region_new(store, ARRAY_SIZE, PS_TRACKING_AUTO);
  if (!region) die("ps_region_new");
  printf("pagesnap %s, tracking %s\n", ps_version(),
         ps_tracking_name(ps_region_tracking(region)));
  inttype* array = static_cast<inttype*>(ps_region_ptr(region));  // the array lives in the region
  inttype* cp = new inttype[num_elems()]();                       // allocate checkpoint space
  std::fill(array, array + num_elems(), 123);                     // initialize array

#ifdef PAGESNAP_SYNC_SNAPSHOT
  timepoint tSnap = std::chrono::high_resolution_clock::now();
  ps_snapshot* snap = ps_snapshot_take(region);
  if (!snap) die("ps_snapshot_take");
  printf("snapshot (s): %lf\n", since(tSnap));
#else
  // The instant of the snapshot: the region is write-protected, the copier starts.
  ps_background* bg = ps_background_snapshot(region);
  if (!bg) die("ps_background_snapshot");
  ps_snapshot* snap = nullptr;
#endif
  std::vector<std::thread> threads = start_workers(array);  // spawn worker threads
  timepoint tStart = std::chrono::high_resolution_clock::now();

  // The checkpoint runs beside the workers, as the seed's child did: wait for the
  // snapshot, then copy it out with NUM_CHECKPOINTERS threads.
  std::atomic<bool> copy_ok{true};
  std::thread checkpoint([&] {
#ifndef PAGESNAP_SYNC_SNAPSHOT
    snap = ps_background_wait(bg);  // frees bg
    if (!snap) die("ps_background_wait");
    printf("background snapshot saved after (s): %lf\n", since(tStart));
#endif
    std::vector<std::thread> cpthreads;
    for (size_t tid = 0; tid < NUM_CHECKPOINTERS; tid++) {
      cpthreads.emplace_back([&, tid] {
        const size_t batch = std::min<size_t>(BATCH_SIZE, ARRAY_SIZE);
        const size_t numBatches = ARRAY_SIZE / batch;
        for (size_t i = tid; i < numBatches; i += NUM_CHECKPOINTERS) {
          char* dst = reinterpret_cast<char*>(cp) + i * batch;
          if (ps_snapshot_read(snap, i * batch, dst, batch) != 0) copy_ok = false;
        }
      });
    }
    for (std::thread& thread : cpthreads) thread.join();
    printf("checkpoint copied after (s): %lf\n", since(tStart));
  });

  for (std::thread& thread : threads) thread.join();  // wait for workers to finish
  printf("duration (s): %lf\n", since(tStart));
  checkpoint.join();

  bool ok = copy_ok && all_123(cp, num_elems());
  printf("%s\n", ok ? "snapshot verified" : "SNAPSHOT WRONG");
  ps_stats st;
  if (ps_store_stats(store, &st) == 0)
    printf("store: %llu unique pages (%llu bytes)\n", (unsigned long long)st.unique_pages,
           (unsigned long long)st.stored_bytes);
  ps_snapshot_free(snap);
  ps_region_free(region);
  ps_store_free(store);
  delete[] cp;
  return ok ? 0 : 1;
}
#endif

int main(int argc, char** argv) {
  if (argc > 1) ARRAY_SIZE = strtoull(argv[1], nullptr, 10) << 20;
  if (argc > 2) NUM_WORKERS = strtoull(argv[2], nullptr, 10);
  if (ARRAY_SIZE == 0 || NUM_WORKERS == 0) {
    fprintf(stderr, "usage: %s [MiB > 0] [workers > 0]\n", argv[0]);
    return 2;
  }
  return run();
}

// The emulated-CUDA runtime behind csrc/emu/cuda_emu.h: a pool of OS threads that run a block's
// threads at once, barriers and warp rendezvous between them, and CUDA's launch rules checked
// as errors that name the kernel. Blocks run one after another unless MF_EMU_BLOCKS asks for
// several at once; MF_EMU_TIMEOUT_S bounds every wait (default 60 s), so a kernel that would
// hang on a GPU fails here instead.
#include "emu/cuda_emu.h"

#include <c10/util/Exception.h>
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mf_emu {
namespace {

constexpr int kWarp = 32;

// Unwinds an emulated thread once its launch has failed elsewhere.
struct Aborted {};

double timeout_seconds() {
  const char* s = std::getenv("MF_EMU_TIMEOUT_S");
  const double v = s ? std::atof(s) : 0.0;
  return v > 0 ? v : 60.0;
}

// Workers a block starts on (more join when its threads wait).
constexpr int kStartWorkers = 2;

bool strict_threads() {
  const char* s = std::getenv("MF_EMU_THREADS");
  return s != nullptr && std::strcmp(s, "all") == 0;
}

int blocks_at_once() {
  const char* s = std::getenv("MF_EMU_BLOCKS");
  const int v = s ? std::atoi(s) : 1;
  return v > 0 ? v : 1;
}

// ---- kernel names: the symbol of the kernel's address in the loaded library --------------

std::string short_name(std::string d) {
  const std::string anon = "(anonymous namespace)";
  for (size_t p; (p = d.find(anon)) != std::string::npos;) d.replace(p, anon.size(), "{anon}");
  int depth = 0;
  size_t end = d.size(), start = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const char c = d[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth == 0 && c == '(') {
      end = i;
      break;
    }
  }
  depth = 0;
  for (size_t i = 0; i < end; ++i) {  // after the return type and the namespaces
    const char c = d[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth == 0 && (c == ' ' || (c == ':' && i + 1 < end && d[i + 1] == ':'))) {
      start = c == ' ' ? i + 1 : i + 2;
    }
  }
  return d.substr(start, end - start);
}

std::string symbol_of(const void* fn) {
  Dl_info info;
  std::ostringstream hex;
  hex << "kernel@" << fn;
  if (!dladdr(fn, &info) || info.dli_fname == nullptr) return hex.str();
  const uintptr_t offset = reinterpret_cast<uintptr_t>(fn) - reinterpret_cast<uintptr_t>(info.dli_fbase);
  const int fd = open(info.dli_fname, O_RDONLY);
  if (fd < 0) return hex.str();
  struct stat st;
  std::string found;
  if (fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    void* map = mmap(nullptr, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
      const char* base = static_cast<const char*>(map);
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
      const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
      for (int i = 0; i < eh->e_shnum && found.empty(); ++i) {
        if (sh[i].sh_type != SHT_SYMTAB && sh[i].sh_type != SHT_DYNSYM) continue;
        const auto* sym = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
        const char* names = base + sh[sh[i].sh_link].sh_offset;
        for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
          if (ELF64_ST_TYPE(sym[k].st_info) == STT_FUNC && sym[k].st_value == offset) {
            found = names + sym[k].st_name;
            break;
          }
        }
      }
      munmap(map, st.st_size);
    }
  }
  close(fd);
  if (found.empty()) return hex.str();
  int status = 0;
  char* demangled = abi::__cxa_demangle(found.c_str(), nullptr, nullptr, &status);
  std::string full = status == 0 && demangled ? demangled : found;
  std::free(demangled);
  return short_name(full);
}

struct KernelInfo {
  std::string name;  // e.g. mask_kernel<float>
  long long bound;   // its __launch_bounds__, 0 when it declares none
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, long long>& bounds_registry() {
  static std::map<std::string, long long> r;
  return r;
}

KernelInfo kernel_info(const void* fn) {
  static std::map<const void*, KernelInfo> cache;
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto it = cache.find(fn);
  if (it != cache.end()) return it->second;
  KernelInfo k{symbol_of(fn), 0};
  const std::string base = k.name.substr(0, k.name.find('<'));
  auto b = bounds_registry().find(base);
  if (b != bounds_registry().end()) k.bound = b->second;
  cache[fn] = k;
  return k;
}

// ---- one launch, its blocks and their warps ---------------------------------------------

struct Launch {
  std::string kernel;
  double timeout;
  int in_flight;  // blocks running at once
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> failed{false};
  std::string error;
  Block* shared_owner = nullptr;

  void fail(const std::string& what) {
    {
      std::lock_guard<std::mutex> lock(m);
      if (!failed) {
        error = what;
        failed = true;
      }
    }
    // Threads waiting elsewhere (other blocks' barriers) poll `failed` (see Block::wait).
    cv.notify_all();
  }
  std::string message(const std::string& what) const {
    return "emulated CUDA, kernel " + kernel + ": " + what;
  }
};

struct Warp {
  // One rendezvous at a time: lanes gather their values, then each copies the result out.
  bool distributing = false;
  int arrived = 0, departing = 0;
  unsigned mask = 0;
  // Lanes that have left the kernel; a rendezvous that still needs one of them is a defect.
  unsigned exited = 0;
  const char* what = nullptr;
  uint64_t gen = 0;
  uint64_t values[kWarp] = {};
  uint64_t result[kWarp] = {};
  // Only this warp's lanes wait here: a rendezvous wakes 31 threads, not the whole block.
  std::condition_variable cv;
};

}  // namespace

struct Block {
  Launch* launch;
  int nthreads;
  dim3 dim, grid;
  uint3 idx;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0, exited = 0;
  uint64_t generation = 0;
  const char* site_file = nullptr;
  int site_line = 0;
  std::vector<Warp> warps;
  // Threads not started yet, workers on this block, and how a waiting thread asks for one more.
  std::atomic<int> next{0};
  std::atomic<int> started{0};  // MF_EMU_THREADS=all: threads through the start gate
  int workers = 0;  // guarded by the launch's mutex
  std::function<void()> join;

  Block(Launch* l, dim3 block, dim3 g, uint3 i)
      : launch(l), nthreads(static_cast<int>(block.x * block.y * block.z)), dim(block), grid(g),
        idx(i), warps((nthreads + kWarp - 1) / kWarp) {}

  std::string where() const {
    std::ostringstream s;
    s << "block (" << idx.x << ", " << idx.y << ", " << idx.z << ")";
    return s.str();
  }

  // Fails the launch; the caller holds `m`. Waiting threads see it and unwind.
  [[noreturn]] void fail_locked(const std::string& what) {
    launch->fail(launch->message(what + " [" + where() + "]"));
    cv.notify_all();
    for (Warp& w : warps) w.cv.notify_all();
    throw Aborted{};
  }

  // `describe` names what is waited for, in the error only (no formatting on the hot path).
  template <typename Pred, typename Describe>
  void wait(std::unique_lock<std::mutex>& lock, std::condition_variable& on, Pred done,
            Describe describe) {
    if (!done() && next.load() < nthreads) join();  // the threads it waits for may not run yet
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration<double>(launch->timeout);
    while (!done()) {
      if (launch->failed) throw Aborted{};
      // Short slices: a failure in another block wakes nobody here.
      on.wait_for(lock, std::chrono::milliseconds(20));
      if (!done() && std::chrono::steady_clock::now() > deadline) {
        if (launch->failed) throw Aborted{};
        std::ostringstream s;
        s << describe() << ": not every thread arrived within " << launch->timeout
          << " s (MF_EMU_TIMEOUT_S); on a GPU this hangs";
        fail_locked(s.str());
      }
    }
  }

  void barrier(const char* file, int line) {
    std::unique_lock<std::mutex> lock(m);
    if (launch->failed) throw Aborted{};
    auto at = [&] {
      std::ostringstream s;
      s << "__syncthreads() at " << file << ":" << line;
      return s.str();
    };
    if (arrived == 0) {
      site_file = file;
      site_line = line;
    } else if (site_line != line || std::strcmp(site_file, file) != 0) {
      std::ostringstream s;
      s << at() << " and __syncthreads() at " << site_file << ":" << site_line
        << " are reached by different threads of one block (a barrier in divergent code)";
      fail_locked(s.str());
    }
    ++arrived;
    if (arrived + exited == nthreads) {
      if (exited > 0) {
        std::ostringstream s;
        s << at() << " is not reached by " << exited << " of " << nthreads
          << " threads, which exited (a barrier in divergent code)";
        fail_locked(s.str());
      }
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    const uint64_t gen = generation;
    wait(lock, cv, [&] { return generation != gen; }, at);
  }

  void exchange(int linear, unsigned mask, uint64_t value, uint64_t out[kWarp], const char* what) {
    const int w = linear / kWarp, lane = linear % kWarp;
    const int lanes = std::min(kWarp, nthreads - w * kWarp);
    const unsigned present = lanes == kWarp ? ~0u : ((1u << lanes) - 1);
    std::unique_lock<std::mutex> lock(m);
    if (launch->failed) throw Aborted{};
    auto who = [&] {
      std::ostringstream s;
      s << what << "(mask 0x" << std::hex << mask << std::dec << ") in warp " << w;
      return s.str();
    };
    if (!((mask >> lane) & 1)) {
      fail_locked(who() + ": called by lane " + std::to_string(lane) + ", outside its mask");
    }
    if (mask & ~present) {
      fail_locked(who() + ": the mask names lanes that do not exist (the warp has " +
                  std::to_string(lanes) + ")");
    }
    Warp& wp = warps[w];
    wait(lock, wp.cv, [&] { return !wp.distributing; }, who);
    if (wp.arrived > 0 && (wp.mask != mask || std::strcmp(wp.what, what) != 0)) {
      std::ostringstream s;
      s << who() << " meets " << wp.what << "(mask 0x" << std::hex << wp.mask << std::dec
        << "): lanes of one warp disagree";
      fail_locked(s.str());
    }
    wp.mask = mask;
    wp.what = what;
    wp.values[lane] = value;
    const int need = __builtin_popcount(mask);
    ++wp.arrived;
    check_exited_lanes_locked(w);
    if (wp.arrived == need) {
      for (int i = 0; i < kWarp; ++i) wp.result[i] = ((mask >> i) & 1) ? wp.values[i] : 0;
      wp.distributing = true;
      wp.departing = need;
      ++wp.gen;
      wp.cv.notify_all();
    } else {
      const uint64_t gen = wp.gen;
      wait(lock, wp.cv, [&] { return wp.gen != gen; }, who);
    }
    std::memcpy(out, wp.result, sizeof(wp.result));
    if (--wp.departing == 0) {
      wp.distributing = false;
      wp.arrived = 0;
      wp.cv.notify_all();
    }
  }

  // Reports a rendezvous that waits for exited lanes once every lane of its mask has either
  // arrived or exited, so the message names the same lanes whatever the interleaving.
  void check_exited_lanes_locked(int w) {
    const Warp& wp = warps[w];
    const unsigned gone = wp.mask & wp.exited;
    if (wp.arrived == 0 || wp.distributing || gone == 0) return;
    if (wp.arrived + __builtin_popcount(gone) < __builtin_popcount(wp.mask)) return;
    std::ostringstream s;
    s << "lanes";
    for (int i = 0; i < kWarp;) {
      if (!((gone >> i) & 1)) { ++i; continue; }
      int j = i;
      while (j + 1 < kWarp && ((gone >> (j + 1)) & 1)) ++j;
      s << " " << i;
      if (j > i) s << "-" << j;
      i = j + 1;
    }
    s << " of warp " << w << " exited while lanes of " << wp.what << "(mask 0x" << std::hex
      << wp.mask << ") wait for them";
    fail_locked(s.str());
  }

  // MF_EMU_THREADS=all: every thread of the block waits here until all have started, through
  // one atomic counter and no lock. A thread that ran to its end before another started, or a
  // lock taken on the way in, would order the threads' accesses for ThreadSanitizer and hide the
  // races between them; after this gate only the kernel's own barriers, warp intrinsics and
  // atomics order them.
  void start_gate() {
    started.fetch_add(1, std::memory_order_acq_rel);
    while (started.load(std::memory_order_acquire) < nthreads) {
      if (launch->failed) throw Aborted{};
      std::this_thread::yield();
    }
  }

  // Returns true for the block's last thread.
  bool thread_exit(int linear) {
    std::unique_lock<std::mutex> lock(m);
    const bool last = ++exited == nthreads;
    if (launch->failed) return last;
    try {
      if (arrived > 0 && arrived + exited == nthreads) {
        std::ostringstream s;
        s << "__syncthreads() at " << site_file << ":" << site_line << " is not reached by "
          << exited << " of " << nthreads << " threads, which exited (a barrier in divergent code)";
        fail_locked(s.str());
      }
      warps[linear / kWarp].exited |= 1u << (linear % kWarp);
      check_exited_lanes_locked(linear / kWarp);
    } catch (const Aborted&) {
    }
    return last;
  }
};

namespace {

thread_local ThreadCtx* tls_ctx = nullptr;

// Worker threads, reused across launches. A block starts on a few workers, each running the
// block's unstarted threads one after another; whenever a thread waits (a barrier, a warp
// rendezvous) while threads are still unstarted, another worker joins the block. So a block
// without barriers costs a few hand-offs, and a block with barriers gets every thread its own
// OS thread before the barrier completes. MF_EMU_THREADS=all gives each thread its own OS
// thread from the start (the strictest interleaving, for ThreadSanitizer).
class Pool {
 public:
  void submit(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(m_);
    Worker* w;
    if (!idle_.empty()) {
      w = idle_.back();
      idle_.pop_back();
    } else {
      workers_.push_back(std::make_unique<Worker>());
      w = workers_.back().get();
      w->thread = std::thread([this, w] { loop(w); });
      w->thread.detach();  // lives as long as the process: no join at exit
    }
    std::lock_guard<std::mutex> wl(w->m);
    w->task = std::move(task);
    w->has = true;
    w->cv.notify_one();
  }

 private:
  struct Worker {
    std::mutex m;
    std::condition_variable cv;
    std::function<void()> task;
    bool has = false;
    std::thread thread;
  };

  void loop(Worker* w) {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> wl(w->m);
        w->cv.wait(wl, [w] { return w->has; });
        task = std::move(w->task);
        w->has = false;
      }
      task();
      std::lock_guard<std::mutex> lock(m_);
      idle_.push_back(w);
    }
  }

  std::mutex m_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> idle_;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: its threads outlive static destructors
  return *p;
}

std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

ThreadCtx& ctx() {
  TORCH_CHECK(tls_ctx != nullptr,
              "emulated CUDA: threadIdx/blockIdx/blockDim/gridDim used outside a kernel");
  return *tls_ctx;
}

void syncthreads(const char* file, int line) { ctx().block->barrier(file, line); }

void warp_exchange(unsigned mask, uint64_t value, uint64_t out[32], const char* what) {
  ThreadCtx& c = ctx();
  c.block->exchange(c.linear, mask, value, out, what);
}

void claim_shared() {
  Block* b = ctx().block;
  Launch* l = b->launch;
  if (l->in_flight == 1) return;
  std::unique_lock<std::mutex> lock(l->m);
  if (l->shared_owner != nullptr && l->shared_owner != b && b->next.load() < b->nthreads) {
    lock.unlock();
    b->join();
    lock.lock();
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(l->timeout);
  while (l->shared_owner != nullptr && l->shared_owner != b) {
    if (l->failed) throw Aborted{};
    l->cv.wait_for(lock, std::chrono::milliseconds(20));
    if (std::chrono::steady_clock::now() > deadline) {
      lock.unlock();
      l->fail(l->message("__shared__ storage not released within the timeout"));
      throw Aborted{};
    }
  }
  l->shared_owner = b;
}

LaunchBounds::LaunchBounds(const char* kernel, long long max_threads) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto& r = bounds_registry();
  auto it = r.find(kernel);
  // Two kernels of one name: the smaller bound holds for both (a stricter check, never a
  // missed one).
  if (it == r.end() || max_threads < it->second) r[kernel] = max_threads;
}

void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
  const KernelInfo info = kernel_info(kernel);
  auto fail = [&](const std::string& what) {
    TORCH_CHECK(false, "emulated CUDA, kernel ", info.name, ": ", what);
  };
  std::ostringstream g, b;
  g << "grid (" << grid.x << ", " << grid.y << ", " << grid.z << ")";
  b << "block (" << block.x << ", " << block.y << ", " << block.z << ")";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail(g.str() + " has no blocks");
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    fail(g.str() + " exceeds the limits (x < 2^31, y and z <= 65535)");
  }
  const long long threads = 1LL * block.x * block.y * block.z;
  if (threads == 0) fail(b.str() + " has no threads");
  if (block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024) {
    fail(b.str() + " exceeds the limits (x, y <= 1024, z <= 64, at most 1024 threads)");
  }
  if (info.bound > 0 && threads > info.bound) {
    fail(b.str() + " has " + std::to_string(threads) + " threads, over the kernel's " +
         "__launch_bounds__(" + std::to_string(info.bound) + ")");
  }
  TORCH_CHECK(tls_ctx == nullptr, "emulated CUDA: kernel ", info.name,
              " launched from inside a kernel (dynamic parallelism is not emulated)");

  // One launch at a time: the blocks of a launch are the only concurrency we model.
  std::lock_guard<std::mutex> serial(launch_mutex());
  Launch launch;
  launch.kernel = info.name;
  launch.timeout = timeout_seconds();
  const long long nblocks = 1LL * grid.x * grid.y * grid.z;
  const int per_batch = static_cast<int>(std::min<long long>(blocks_at_once(), nblocks));
  launch.in_flight = per_batch;
  const int nthreads = static_cast<int>(threads);
  const bool strict = strict_threads();
  for (long long first = 0; first < nblocks && !launch.failed; first += per_batch) {
    const int count = static_cast<int>(std::min<long long>(per_batch, nblocks - first));
    std::vector<std::unique_ptr<Block>> blocks;
    for (int i = 0; i < count; ++i) {
      const long long id = first + i;
      const uint3 idx{static_cast<unsigned>(id % grid.x),
                      static_cast<unsigned>((id / grid.x) % grid.y),
                      static_cast<unsigned>(id / (1LL * grid.x * grid.y))};
      blocks.push_back(std::make_unique<Block>(&launch, block, grid, idx));
    }
    auto run_thread = [&](Block* bl, int t) {
      ThreadCtx c;
      c.thread_idx = uint3{static_cast<unsigned>(t % block.x),
                           static_cast<unsigned>((t / block.x) % block.y),
                           static_cast<unsigned>(t / (block.x * block.y))};
      c.block_idx = bl->idx;
      c.block_dim = block;
      c.grid_dim = grid;
      c.linear = t;
      c.block = bl;
      tls_ctx = &c;
      try {
        if (strict) bl->start_gate();
        if (!launch.failed) body();
      } catch (const Aborted&) {
      } catch (const std::exception& e) {
        launch.fail(launch.message(std::string("a thread raised: ") + e.what()));
      }
      tls_ctx = nullptr;
      const bool last = bl->thread_exit(t);
      if (count > 1 && last) {
        std::lock_guard<std::mutex> lock(launch.m);
        if (launch.shared_owner == bl) {
          launch.shared_owner = nullptr;
          launch.cv.notify_all();
        }
      }
    };
    int blocks_done = 0;
    // A worker's share of a block: unstarted threads, one after another.
    std::function<void(Block*)> work = [&](Block* bl) {
      if (strict) {  // one emulated thread per OS thread, none run after another on one
        const int t = bl->next.fetch_add(1);
        if (t < nthreads) run_thread(bl, t);
      } else {
        for (int t; (t = bl->next.fetch_add(1)) < nthreads;) run_thread(bl, t);
      }
      std::lock_guard<std::mutex> lock(launch.m);
      if (--bl->workers == 0) {
        ++blocks_done;
        launch.cv.notify_all();
      }
    };
    const int start_workers = strict ? nthreads : std::min(nthreads, kStartWorkers);
    {
      std::lock_guard<std::mutex> lock(launch.m);
      for (auto& bl : blocks) {
        Block* p = bl.get();
        p->workers = start_workers;
        p->join = [&launch, &work, p] {
          {
            std::lock_guard<std::mutex> l(launch.m);
            ++p->workers;
          }
          pool().submit([&work, p] { work(p); });
        };
      }
    }
    for (auto& bl : blocks) {
      for (int i = 0; i < start_workers; ++i) pool().submit([&work, p = bl.get()] { work(p); });
    }
    std::unique_lock<std::mutex> lock(launch.m);
    launch.cv.wait(lock, [&] { return blocks_done == count; });
  }
  TORCH_CHECK(!launch.failed, launch.error);
}

}  // namespace mf_emu

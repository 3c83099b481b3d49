// ember-syscall-recorder: runs a program under ptrace and records, for each seccomp filter a
// thread of it installed, which system calls the threads under that filter made afterwards.
// For least_privilege_test.cc, which compares them with ember-vmm's allowlists.
//
//   ember-syscall-recorder OUT PROGRAM [ARGS...]
//
// Threads are told apart by their filter: a thread that installs one (seccomp(2)
// SECCOMP_SET_MODE_FILTER, or prctl PR_SET_SECCOMP) is recorded under that program's length in
// BPF instructions from then on, and a thread it creates afterwards inherits it; calls made
// before a thread has a filter are not recorded (no allowlist applies to them). OUT gets one
// line per filter and call, "<instructions> <syscall number> <times>", and one per filter,
// "threads <instructions> <count>". The recorder exits as the program did (128 + signal when
// a signal ended it). File descriptors are inherited unchanged.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <utility>

namespace {

constexpr unsigned kNoFilter = 0;

struct Thread {
  unsigned filter = kNoFilter;      // instructions of the filter it runs under
  unsigned installing = kNoFilter;  // a filter being installed by the call it is in
  bool started = false;             // its first stop (the attach SIGSTOP) was seen
  bool known = false;               // its creator's clone event was seen: `filter` is right
  bool held = false;                // stopped until that event comes
};

// The length of the sock_fprog at `addr` in process `tid`, 0 when unreadable.
unsigned FilterLength(pid_t tid, std::uint64_t addr) {
  sock_fprog prog{};
  iovec local{&prog, sizeof(prog)};
  // The tracee's address, as process_vm_readv takes it.
  iovec remote{reinterpret_cast<void*>(addr), sizeof(prog)};
  if (::process_vm_readv(tid, &local, 1, &remote, 1, 0) != sizeof(prog)) return kNoFilter;
  return prog.len;
}

// A filter being installed by the call at `entry`, or kNoFilter.
unsigned InstalledFilter(pid_t tid, const __ptrace_syscall_info& info) {
  const auto& args = info.entry.args;
  if (info.entry.nr == SYS_seccomp && args[0] == SECCOMP_SET_MODE_FILTER) {
    return FilterLength(tid, args[2]);
  }
  if (info.entry.nr == SYS_prctl && args[0] == PR_SET_SECCOMP && args[1] == SECCOMP_MODE_FILTER) {
    return FilterLength(tid, args[2]);
  }
  return kNoFilter;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUT PROGRAM [ARGS...]\n", argv[0]);
    return 2;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    std::perror("fork");
    return 2;
  }
  if (child == 0) {
    ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    ::raise(SIGSTOP);
    ::execv(argv[2], argv + 2);
    std::perror("execv");
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFSTOPPED(status)) {
    std::fprintf(stderr, "the child did not stop for tracing\n");
    return 2;
  }
  const long options =
      PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;
  if (::ptrace(PTRACE_SETOPTIONS, child, nullptr, options) != 0) {
    std::perror("PTRACE_SETOPTIONS");
    return 2;
  }
  std::map<pid_t, Thread> threads;
  threads[child].started = true;
  threads[child].known = true;
  std::map<std::pair<unsigned, long>, std::uint64_t> calls;  // (filter, nr) -> times
  std::map<unsigned, std::uint64_t> thread_counts;
  int exit_code = 2;
  ::ptrace(PTRACE_SYSCALL, child, nullptr, nullptr);

  for (;;) {
    const pid_t tid = ::waitpid(-1, &status, __WALL);
    if (tid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: every thread is gone
    }
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      if (tid == child)
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      threads.erase(tid);
      continue;
    }
    if (!WIFSTOPPED(status)) continue;
    Thread& thread = threads[tid];
    const int sig = WSTOPSIG(status);
    const int event = status >> 16;
    int inject = 0;
    if (sig == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof(info), &info) > 0) {
        if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
          if (thread.filter != kNoFilter)
            ++calls[{thread.filter, static_cast<long>(info.entry.nr)}];
          thread.installing = InstalledFilter(tid, info);
        } else if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
          if (thread.installing != kNoFilter && info.exit.rval == 0) {
            thread.filter = thread.installing;
            ++thread_counts[thread.filter];
          }
          thread.installing = kNoFilter;
        }
      }
    } else if (sig == SIGTRAP && event == PTRACE_EVENT_CLONE) {
      unsigned long new_tid = 0;
      ::ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &new_tid);
      Thread& born = threads[static_cast<pid_t>(new_tid)];
      born.filter = thread.filter;  // filters are inherited
      born.known = true;
      if (born.filter != kNoFilter) ++thread_counts[born.filter];
      if (born.held) {
        born.held = false;
        ::ptrace(PTRACE_SYSCALL, static_cast<pid_t>(new_tid), nullptr, 0);
      }
    } else if (sig == SIGSTOP && !thread.started) {
      // A new thread's attach stop, not a signal for it. It may come before its creator's
      // clone event: then it waits for it, so that no call of its goes unattributed.
      thread.started = true;
      if (!thread.known) {
        thread.held = true;
        continue;
      }
    } else if (event == 0) {
      inject = sig;  // a signal for the program (the vCPU kick): delivered as it would be
    }
    thread.started = true;
    ::ptrace(PTRACE_SYSCALL, tid, nullptr, inject);
  }

  std::ofstream out(argv[1]);
  for (const auto& [key, times] : calls)
    out << key.first << " " << key.second << " " << times << "\n";
  for (const auto& [filter, count] : thread_counts)
    out << "threads " << filter << " " << count << "\n";
  out.close();
  if (!out) {
    std::fprintf(stderr, "could not write %s\n", argv[1]);
    return 2;
  }
  return exit_code;
}

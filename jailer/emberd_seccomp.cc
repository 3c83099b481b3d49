// emberd's seccomp allowlist, each call with the code path that needs it. A call missing here
// kills emberd with SIGSYS (or is logged, under --seccomp log): run emberd with --seccomp log and
// read the audit log (dmesg: "audit: type=1326 ... exe=\".../emberd\" ... syscall=N").
//
// Not here, on purpose: execve/execveat, fork/vfork and process-creating clone (VMMs are
// spawned by the fork server created before the filter), ioctl, ptrace, mount and namespace
// calls, executable memory, and any socket family but AF_UNIX (and AF_INET/6 with --tcp).
#include "jailer/emberd_seccomp.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <cstdint>
#include <utility>

namespace ember::jailer {
namespace {

// The flags glibc's pthread_create passes to clone(2) (sysdeps/nptl/pthread_create.c): a new
// thread of this process, never a new process.
constexpr std::uint64_t kThreadCloneFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                            CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
                                            CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;

std::vector<SyscallRule> MemoryAndThreadRules() {
  return {
      Allow("brk", "malloc growing the main arena"),
      AllowIfArgMasked("mmap", "malloc arenas, gRPC slabs, thread stacks; never executable", 2,
                       PROT_EXEC, 0),
      AllowIfArgMasked("mprotect", "malloc arenas made usable, stack guards; never executable", 2,
                       PROT_EXEC, 0),
      Allow("munmap", "free() of large blocks and arenas; a joined thread's stack"),
      Allow("mremap", "realloc() of large blocks (protobuf and gRPC buffers)"),
      AllowIfArg("madvise", "free() trimming arenas; glibc releasing an ended thread's stack", 2,
                 {MADV_DONTNEED}),
      AllowIfArg("clone", "new threads: gRPC's thread pool and pollers, RPC handlers", 0,
                 {kThreadCloneFlags}),
      FailWith("clone3",
               "glibc's pthread_create tries clone3 first; its flags sit in memory a filter "
               "cannot read, so it fails with ENOSYS and glibc falls back to clone(2)",
               ENOSYS),
      Allow("set_robust_list", "a new thread registering its robust futex list (glibc)"),
      Allow("rseq", "a new thread registering its restartable sequence area (glibc)"),
      Allow("futex", "mutexes and condition variables: VM entries, event fan-out, gRPC"),
      Allow("sched_yield", "gRPC and abseil spin locks backing off"),
      Allow("sched_getaffinity", "gRPC sizing its thread pools by the usable CPUs"),
      Allow("sched_getparam",
            "glibc's pthread_create reading the creator's scheduling parameters for a thread "
            "created with attributes (gRPC's threads)"),
      Allow("sched_getscheduler",
            "glibc's pthread_create reading the creator's scheduling policy (gRPC's threads)"),
      AllowIfArg("prctl", "gRPC naming its threads (pthread_setname_np: PR_SET_NAME)", 0,
                 {PR_SET_NAME}),
      Allow("getpid", "pthread_kill and abort() (its own tgid); log lines"),
      Allow("gettid", "gRPC and abseil naming the current thread in logs and locks"),
      Allow("exit", "a thread returning"),
      Allow("exit_group", "the process ending"),
      Allow("rt_sigprocmask", "glibc masking signals around thread creation and exit; sigwait"),
      Allow("rt_sigtimedwait", "the main thread waiting for SIGTERM/SIGINT (sigwait)"),
      Allow("rt_sigreturn", "returning from a signal handler"),
      Allow("restart_syscall", "a wait a signal interrupted"),
      AllowIfArg("tgkill", "abort() on a broken invariant raising SIGABRT", 2, {SIGABRT}),
      Allow("clock_gettime", "time stamps and deadlines when the vDSO falls back to the call"),
      Allow("clock_nanosleep", "sleeps: gRPC back-off, waiting for a VM to stop"),
      Allow("nanosleep", "sleeps: gRPC back-off, waiting for a VM to stop"),
      Allow("getrandom", "gRPC and abseil seeding hash tables and random back-off"),
  };
}

std::vector<SyscallRule> IoRules(const EmberdSeccompParams& params) {
  std::vector<std::uint64_t> families = {AF_UNIX};
  if (params.tcp) {
    families.push_back(AF_INET);
    families.push_back(AF_INET6);
  }
  return {
      // Event loops: gRPC's pollers, the VM supervisor, per-VM control calls.
      Allow("epoll_create1", "gRPC pollers created as load grows"),
      Allow("epoll_ctl", "gRPC pollers; the supervisor watching control sockets and pidfds"),
      Allow("epoll_wait", "the VM supervisor loop"),
      Allow("epoll_pwait", "gRPC's epoll poller (and glibc builds that wrap epoll_wait in it)"),
      Allow("poll", "waiting for a VM's control reply; the supervisor checking a pidfd"),
      Allow("ppoll", "waiting for a VM's control reply (glibc builds that wrap poll in it)"),
      Allow("eventfd2", "gRPC wake-up fds for pollers and completion queues"),
      Allow("read", "control sockets, gRPC wake-up fds, records, VM logs and consoles"),
      Allow("write", "log lines, control frames, gRPC wake-ups, records"),
      Allow("readv", "gRPC reading a connection"),
      Allow("writev", "gRPC writing a connection"),
      Allow("pread64", "StreamConsole: reading a VM's console file from an offset"),
      Allow("lseek", "stdio and std::filesystem positioning in a file"),
      Allow("close", "connections, control sockets, pidfds, record files"),
      Allow("fcntl", "gRPC and the control channel setting O_NONBLOCK and FD_CLOEXEC"),
      // Sockets: the API's own listeners exist before the filter; what follows is accepting
      // clients and each VM's control socket (Create: listen, connect; Recover: connect).
      AllowIfArg("socket", "each VM's control socket (AF_UNIX); TCP clients only with --tcp", 0,
                 families),
      Allow("bind", "a VM's control socket at <state-dir>/<vm>/control.sock"),
      Allow("listen", "a VM's control socket"),
      Allow("connect", "emberd connecting to a VM's control socket"),
      Allow("accept4", "gRPC accepting API clients; emberd itself with --socket-group"),
      Allow("uname", "gRPC taking over a connection emberd accepted (--socket-group): it reads "
                     "the kernel's version; nothing to leak or change"),
      Allow("getsockopt", "gRPC reading SO_ERROR and buffer sizes of connections"),
      Allow("setsockopt", "gRPC tuning accepted connections (buffers, TCP_NODELAY)"),
      Allow("getsockname", "gRPC naming connections' local ends"),
      Allow("getpeername", "gRPC naming connections' peers"),
      Allow("sendmsg", "gRPC writes; spawn requests with SCM_RIGHTS to the fork server"),
      Allow("recvmsg", "gRPC reads; the fork server's replies"),
      Allow("sendto", "control frames to a VM (send)"),
      Allow("recvfrom", "control frames from a VM (recv)"),
      Allow("shutdown", "gRPC closing a connection"),
  };
}

std::vector<SyscallRule> StateDirRules(const EmberdSeccompParams& params) {
  std::vector<SyscallRule> rules = {
      Allow("openat", "records, VM logs and consoles under the state dir (never executed)"),
      Allow("openat2", "checking a request's host paths beneath --allow-dir (O_PATH, "
                       "RESOLVE_BENEATH); nothing openat does not already allow"),
      Allow("newfstatat", "std::filesystem and stdio: file types and sizes"),
      Allow("fstat", "stdio sizing a buffer"),
      Allow("getdents64", "listing the state dir (Recover) and a VM's dir (Delete)"),
      Allow("mkdir", "a new VM's directory; a snapshot's directory"),
      AllowIfArg("chmod", "a VM's control socket made 0600 once bound", 1, {0600}),
      Allow("rename", "atomic record writes: a temporary file replaces PATH"),
      Allow("unlink", "a VM's control socket and temporary files; DeleteSnapshot's files"),
      Allow("unlinkat", "Delete removing a VM's directory tree"),
      Allow("rmdir", "Delete removing a VM's directory tree; DeleteSnapshot an emptied directory"),
      Allow("fsync", "atomic record writes reach the disk before the rename"),
      Allow("fdatasync", "atomic record writes reach the disk before the rename"),
      Allow("access", "picking a free snapshot id; checking a snapshot's files before a restore"),
  };
  if (params.snapshot_gid) {
    rules.push_back(Allow("ftruncate",
                          "a jailed VM's snapshot, copied out of its jail into a new file "
                          "(snapshot_publish.h), gets its size first: holes stay holes"));
    rules.push_back(Allow("copy_file_range",
                          "that copy, data ranges only, page cache to page cache"));
    rules.push_back(Allow("pwrite64", "that copy where copy_file_range cannot"));
    rules.push_back(AndArgIs(AllowIfArg("fchown",
                                        "a snapshot moved out of a jail becomes root's and the "
                                        "snapshot group's: its VM can no longer change it, "
                                        "clones read it through the group",
                                        1, {0}),
                             2, *params.snapshot_gid));
    rules.push_back(AllowIfArg("fchmod", "that snapshot file made 0440", 1, {0440}));
  }
  return rules;
}

std::vector<SyscallRule> ProcessRules() {
  return {
      Allow("pidfd_open", "watching a VM's ember-vmm for its exit"),
      AllowIfArg("pidfd_send_signal", "killing an ember-vmm that will not stop or failed to start",
                 1, {SIGKILL, SIGTERM}),
      Allow("waitid", "reaping an ember-vmm that ended, for its exit status"),
      AllowIfArg("kill", "stopping an ember-vmm whose start failed half-way", 1,
                 {SIGKILL, SIGTERM}),
  };
}

}  // namespace

SeccompPolicy EmberdPolicy(const EmberdSeccompParams& params) {
  SeccompPolicy policy{"emberd", {}};
  auto append = [&](std::vector<SyscallRule> rules) {
    for (SyscallRule& rule : rules) policy.rules.push_back(std::move(rule));
  };
  append(MemoryAndThreadRules());
  append(IoRules(params));
  append(StateDirRules(params));
  append(ProcessRules());
  return policy;
}

}  // namespace ember::jailer

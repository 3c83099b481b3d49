// ember-vmm's seccomp allowlists, one per thread kind, each call with the code path that needs
// it. A call missing here kills the VMM with SIGSYS (or is logged, under --seccomp log): run
// the VMM with --seccomp log and read the audit log (dmesg: "audit: type=1326 ... syscall=N")
// to find which.
//
// The KVM ioctl numbers come from <linux/kvm.h>, as in vmm/kvm: the filter compares the
// request number the vCPU thread passes.
#include "jailer/vmm_seccomp.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <utility>

// Whether the sanitizer runtime (-DEMBER_SANITIZE=ON: ASan, with LeakSanitizer) is compiled in.
// The compiler says so itself, so a production build can never carry the rules it adds.
#if defined(__SANITIZE_ADDRESS__)
#define EMBER_SECCOMP_SANITIZER_RUNTIME 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_SECCOMP_SANITIZER_RUNTIME 1
#endif
#endif

namespace ember::jailer {
namespace {

// tgkill's target process (arg 0, the tgid) is the VMM itself when its pid is known.
SyscallRule OwnProcessOnly(SyscallRule rule, const VmmSeccompParams& params) {
  return params.pid == 0 ? rule : AndArgIs(std::move(rule), 0, params.pid);
}

// Both thread kinds: memory management by malloc, locks, time, logging, ending.
std::vector<SyscallRule> CommonRules() {
  return {
      Allow("futex",
            "mutexes and condition variables: metrics, event-loop posts, vCPU pause; a "
            "virtio-blk reset waiting for the requests in flight (vCPU thread, with a timeout)"),
      Allow("write",
            "log lines (stderr or --log-path), guest serial output, eventfd signals (irqfds, "
            "event-loop wake-ups)"),
      Allow("brk", "malloc growing the main arena"),
      AllowIfArgMasked("mmap", "malloc: new arenas and large blocks; never executable", 2, PROT_EXEC,
                    0),
      AllowIfArgMasked("mprotect", "malloc making arena memory usable; never executable", 2, PROT_EXEC,
                    0),
      Allow("munmap", "free() of large blocks and arenas; a joined thread's stack"),
      AllowIfArg("madvise", "free() trimming arenas; glibc releasing an ended thread's stack", 2,
                 {MADV_DONTNEED}),
      Allow("clock_gettime", "time stamps when the vDSO falls back to the system call"),
      Allow("rt_sigprocmask", "glibc masking signals around a thread's exit and abort()"),
      Allow("exit", "a thread returning"),
      Allow("exit_group", "the process ending"),
  };
}

// Sanitizer builds only: what the ASan runtime itself calls on a filtered thread. (Its leak
// check at exit needs ptrace and /proc, far more than a filter should allow: a filtered
// ember-vmm skips it instead, see vmm/seccomp.cc.)
std::vector<SyscallRule> SanitizerRuntimeRules() {
#ifdef EMBER_SECCOMP_SANITIZER_RUNTIME
  return {
      Allow("sigaltstack", "sanitizer build: ASan takes down a thread's signal stack as it ends"),
      AllowIfArg("madvise",
                 "sanitizer build: ASan remaps an ended thread's stack shadow, no huge pages and "
                 "out of core dumps",
                 2, {MADV_NOHUGEPAGE, MADV_DONTDUMP}),
      Allow("sched_yield", "sanitizer build: ASan's allocator spin locks yield under contention"),
  };
#else
  return {};
#endif
}

std::vector<SyscallRule> VmmRules(const VmmSeccompParams& params) {
  return {
      Allow("epoll_wait", "the VMM event loop"),
      Allow("epoll_pwait", "the VMM event loop (glibc builds that wrap epoll_wait in it)"),
      Allow("epoll_ctl",
            "console input paused and resumed with the serial backlog; control connections "
            "added and removed"),
      Allow("read",
            "ioeventfds, io_uring completion eventfd, signalfd, metrics timerfd, console stdin, "
            "the control connection"),
      Allow("io_uring_enter",
            "virtio-blk io_uring engine: submitting requests, waiting for them before a "
            "snapshot. The ring takes only the engine's opcodes on its registered file "
            "(restricted before it is enabled); io_uring_setup and io_uring_register are "
            "not allowed but a file-table update, so no other ring can be made or widened"),
      AllowIfArg("io_uring_register",
                 "a drive swap puts the new backing file in the engine's one registered-file "
                 "slot; the ring's own restrictions admit this registration only, and the file "
                 "gets only the reads, writes, syncs and fallocates allowed here on any fd",
                 1, {IORING_REGISTER_FILES_UPDATE}),
      Allow("preadv", "virtio-blk sync engine: reads"),
      Allow("pwritev", "virtio-blk sync engine: writes"),
      Allow("fdatasync", "virtio-blk sync engine: flushes"),
      Allow("fallocate", "virtio-blk sync engine: discard and write-zeroes"),
      Allow("timerfd_settime",
            "rate limiters (configured or set by UpdateRateLimits): arming the refill timer "
            "of a throttled device"),
      params.directories_by_fd
          ? AllowIfArg("openat",
                       "the metrics, snapshot, memory and working-set files: base::AtomicFile "
                       "creates a new file of its own (no existing file: a drive swap's new file "
                       "arrives as an fd on the control channel); the directories it fsyncs are "
                       "held open (--dirs-by-fd), none is opened by name; vsock: the socket file "
                       "at <uds_path>_P, O_PATH without following a symlink, to connect to that "
                       "very socket (base::ConnectNoFollow; O_PATH reads nothing)",
                       2, {O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, O_PATH | O_NOFOLLOW | O_CLOEXEC})
          : AllowIfArg("openat",
                       "the metrics, snapshot, memory and working-set files: base::AtomicFile "
                       "creates a new file of its own and opens its directory to fsync the "
                       "rename (no existing file: a drive swap's new file arrives as an fd on "
                       "the control channel); vsock: the socket file at <uds_path>_P, O_PATH "
                       "without following a symlink, to connect to that very socket "
                       "(base::ConnectNoFollow; O_PATH reads nothing)",
                       2,
                       {O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                        O_PATH | O_NOFOLLOW | O_CLOEXEC}),
      Allow("recvmsg",
            "the control connection: a drive swap's new backing file comes attached to its "
            "request (SCM_RIGHTS), opened by the controller"),
      AllowIfArg("fcntl",
                 "a drive swap checks the access mode and O_DIRECT of the file it was handed",
                 1, {F_GETFL}),
      Allow("rename",
            "the metrics file, snapshot, memory and working-set files: a temporary file "
            "replaces PATH atomically"),
      Allow("close", "the metrics file, control connections, devices released at exit"),
      Allow("fstat", "stdio sizing a buffer on its first use (exit messages)"),
      Allow("newfstatat",
            "stdio sizing a buffer on its first use (exit messages); diff snapshots: "
            "CheckOutputIsNoInput's stat of the new file and of the chain beneath it"),
      AllowIfArg("accept4",
                 "a controller connecting to the control socket; a host process connecting to "
                 "the vsock's uds_path",
                 3, {SOCK_NONBLOCK | SOCK_CLOEXEC}),
      Allow("sendto",
            "control channel: framed replies and events (send); vsock: data for a host peer "
            "(send)"),
      Allow("writev", "virtio-net: a guest frame (header and payload) written to the tap"),
      Allow("readv", "vsock: host socket data read straight into the guest's RX buffers"),
      Allow("sendmsg", "vsock: guest data written to its host socket from the TX buffers"),
      Allow("recvfrom", "vsock: the CONNECT line of a host peer, peeked and then read (recv)"),
      Allow("shutdown", "vsock: passing a guest's SHUTDOWN on to its host socket"),
      AllowIfArg("socket", "vsock: a guest connecting to host port P reaches <uds_path>_P", 0,
                 {AF_UNIX}),
      Allow("connect",
            "vsock: a guest connecting to host port P reaches <uds_path>_P (through "
            "/proc/self/fd/N of the socket file opened O_PATH)"),
      Allow("unlink",
            "vsock: removing the uds_path listener's socket file as the VMM ends; "
            "base::AtomicFile removing its temporary file after a failed snapshot write"),
      Allow("poll",
            "control channel: waiting for a slow controller to take a reply; vsock: whether a "
            "host peer that sent EOF hung up altogether (no wait)"),
      Allow("getpid",
            "pthread_kill (its own tgid); the control channel's status reply; "
            "base::AtomicFile naming its temporary file"),
      OwnProcessOnly(AllowIfArg("tgkill", "kicking a vCPU out of KVM_RUN to stop or pause it",
                                2, {static_cast<std::uint64_t>(params.kick_signal)}),
                     params),
      // Snapshots, taken on the VMM thread while the vCPUs are parked.
      AllowIfArg("ioctl", "snapshot: reading vCPU, irqchip, PIT and clock state", 1,
                 params.snapshot_ioctls),
      Allow("lseek",
            "snapshot: SEEK_DATA/SEEK_HOLE over guest memory to skip untouched pages; a drive "
            "swap: the size of a block device (SEEK_END)"),
      Allow("ftruncate", "snapshot: sizing the memory file"),
      Allow("pwrite64", "snapshot: writing guest memory into the memory file"),
      Allow("fsync",
            "snapshot: the state and memory files, and their directory, reach the disk before "
            "success"),
  };
}

std::vector<SyscallRule> VcpuRules() {
  return {
      AllowIfArg("ioctl",
                 "KVM_RUN: the vCPU loop; KVM_GET_REGS: the guest's rip in the messages of a "
                 "triple fault or an emulation failure; TUNSETVNETHDRSZ, TUNSETOFFLOAD: "
                 "virtio-net activation (the guest's DRIVER_OK) sets the tap's header size and "
                 "offloads to match the negotiated features",
                 1, {KVM_RUN, KVM_GET_REGS, TUNSETVNETHDRSZ, TUNSETOFFLOAD}),
      Allow("epoll_ctl",
            "virtio-net/vsock activation and reset (the guest's status writes): the device "
            "starts or stops watching its tap or sockets"),
      Allow("close", "vsock reset by the guest: its host connections are closed"),
      Allow("rt_sigreturn", "returning from the kick signal's handler, which ends KVM_RUN"),
      Allow("restart_syscall", "a futex wait the kick signal interrupted"),
  };
}

std::vector<SyscallRule> PageServerRules(const VmmSeccompParams& params) {
  return {
      Allow("poll", "waiting for a page fault message or the stop event"),
      Allow("ppoll", "waiting for a page fault message (glibc builds that wrap poll in it)"),
      Allow("read", "page fault messages from the userfaultfd; the stop eventfd"),
      AllowIfArg("ioctl",
                 "UFFDIO_COPY: a data page from the memory file; UFFDIO_ZEROPAGE: a hole; "
                 "UFFDIO_WAKE: waking a fault whose page another thread already filled",
                 1, {UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE}),
      Allow("rt_sigreturn", "returning from a signal handler the thread inherited"),
      Allow("restart_syscall", "a poll or futex wait a signal interrupted"),
      Allow("getpid", "abort() when a fault cannot be served (the guest cannot go on)"),
      OwnProcessOnly(AllowIfArg("tgkill",
                                "abort() raising SIGABRT on itself when a fault cannot be served",
                                2, {SIGABRT}),
                     params),
  };
}

}  // namespace

const char* VmmThreadKindName(VmmThreadKind kind) {
  switch (kind) {
    case VmmThreadKind::kVmm:
      return "vmm";
    case VmmThreadKind::kVcpu:
      return "vcpu";
    case VmmThreadKind::kPageServer:
      return "page-server";
  }
  return "unknown";
}

SeccompPolicy VmmThreadPolicy(VmmThreadKind kind, const VmmSeccompParams& params) {
  SeccompPolicy policy;
  policy.name = VmmThreadKindName(kind);
  policy.rules = CommonRules();
  std::vector<SyscallRule> own;
  switch (kind) {
    case VmmThreadKind::kVmm:
      own = VmmRules(params);
      break;
    case VmmThreadKind::kVcpu:
      own = VcpuRules();
      break;
    case VmmThreadKind::kPageServer:
      own = PageServerRules(params);
      break;
  }
  policy.rules.insert(policy.rules.end(), std::make_move_iterator(own.begin()),
                      std::make_move_iterator(own.end()));
  std::vector<SyscallRule> runtime = SanitizerRuntimeRules();
  policy.rules.insert(policy.rules.end(), std::make_move_iterator(runtime.begin()),
                      std::make_move_iterator(runtime.end()));
  return policy;
}

}  // namespace ember::jailer

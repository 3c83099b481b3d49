// The API front's seccomp allowlist, each call with the code path that needs it. A call missing
// here kills the front with SIGSYS (under --seccomp log the kernel logs it instead: dmesg,
// "audit: type=1326 ... exe=\".../ember-fc-api\" ... syscall=N").
#include "vmm/fcapi/front_seccomp.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "vmm/base/logging.h"

namespace ember::fcapi {

using jailer::Allow;
using jailer::AllowIfArg;
using jailer::AllowIfArgMasked;

jailer::SeccompPolicy FrontPolicy() {
  return {"api-front",
          {
              // Memory and the process itself.
              Allow("brk", "malloc growing the heap"),
              AllowIfArgMasked("mmap", "malloc arenas and large blocks; never executable", 2,
                               PROT_EXEC, 0),
              AllowIfArgMasked("mprotect", "malloc arenas made usable; never executable", 2,
                               PROT_EXEC, 0),
              Allow("munmap", "free() of large blocks"),
              Allow("mremap", "realloc() of large blocks (request bodies, protobuf buffers)"),
              AllowIfArg("madvise", "free() trimming arenas", 2, {MADV_DONTNEED}),
              Allow("futex", "protobuf's and abseil's one-time initialisation"),
              Allow("getrandom", "abseil and protobuf seeding hash tables; mkdtemp's names"),
              Allow("clock_gettime", "log time stamps, deadlines, temporary names"),
              Allow("getpid", "AtomicFile's temporary names; abort()"),
              Allow("gettid", "abort() naming the thread"),
              AllowIfArg("tgkill", "abort() on a broken invariant raising SIGABRT", 2, {SIGABRT}),
              Allow("rt_sigprocmask", "abort() and stdio masking signals"),
              Allow("rt_sigreturn", "returning from a signal handler"),
              Allow("restart_syscall", "a wait a signal interrupted"),
              Allow("exit_group", "the front ending with the VMM's exit code"),
              Allow("exit", "the front ending"),
              // The API socket, its clients, and ember-vmm's control channel.
              Allow("poll", "the front's loop; waiting for a control reply or the launcher"),
              Allow("ppoll", "the same (glibc builds that wrap poll in it)"),
              Allow("accept4", "accepting API clients"),
              Allow("read", "API requests, control frames, the signalfd, the config file"),
              Allow("write", "log lines, the config and metrics files"),
              Allow("writev", "stdio writing the log"),
              Allow("sendto", "API responses and control requests (send)"),
              Allow("recvfrom", "the launcher's replies (recv)"),
              Allow("sendmsg", "spawn requests with the control socket (SCM_RIGHTS) to the "
                               "launcher"),
              Allow("shutdown", "an API connection answered with an error, drained before "
                                "closing"),
              AllowIfArg("socket", "each VMM's control socket", 0, {AF_UNIX}),
              Allow("bind", "the control socket in the front's private directory"),
              Allow("listen", "the control socket"),
              Allow("connect", "the front's end of the control channel"),
              Allow("close", "connections, sockets, files"),
              Allow("fcntl", "O_NONBLOCK on the control channel"),
              // Files: the VMM's config, FlushMetrics, the private directory, the log.
              Allow("openat", "the config handed to ember-vmm; the metrics file; log rotation"),
              Allow("newfstatat", "a snapshot's memory backend: a socket or a file"),
              Allow("fstat", "stdio sizing a buffer"),
              Allow("lseek", "stdio positioning in the log"),
              Allow("fsync", "the metrics file reaching the disk before its rename"),
              Allow("rename", "the metrics file replacing the old one"),
              Allow("mkdir", "the private directory of the control socket (mkdtemp)"),
              Allow("unlink", "the control socket and config once the VMM has them; the API "
                              "socket at exit; an uncommitted metrics file"),
              Allow("rmdir", "the private directory"),
              Allow("getcwd", "relative snapshot paths made absolute for ember-vmm"),
              // The VMM process.
              AllowIfArg("kill", "stopping the VMM: SIGTERM on ours, SIGKILL if it is stuck", 1,
                         {SIGTERM, SIGKILL}),
              Allow("wait4", "reaping the VMM for its exit code"),
          }};
}

absl::Status InstallFrontFilter(std::optional<jailer::SeccompMode> mode) {
  if (!mode) {
    EMBER_LOG(kWarn) << "seccomp: the API front runs without a filter (--no-seccomp)";
    return absl::OkStatus();
  }
  return jailer::InstallSeccompPolicy(FrontPolicy(), *mode);
}

}  // namespace ember::fcapi

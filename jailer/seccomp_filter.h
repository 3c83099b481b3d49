#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ember::jailer {

// One allowed system call and why the thread needs it. Allowlists are tables of these, one
// table per thread kind, so that a reviewer reads every permission next to its reason.
struct SyscallRule {
  std::string name;    // as libseccomp spells it: "read", "ioctl", "epoll_pwait".
  std::string reason;  // one line: which code path issues it.
  // When arg_index >= 0 the call is allowed only if (argument & arg_mask) equals one of
  // allowed_values, e.g. ioctl's request (arg 1) against {KVM_RUN}. Otherwise any arguments.
  int arg_index = -1;
  std::vector<uint64_t> allowed_values;
  // ioctl's request is an unsigned int in the kernel; compare the low 32 bits only, so a
  // sign-extended request in the register does not slip past (or trip) the filter.
  uint64_t arg_mask = 0xffffffffULL;
  // When also_arg_index >= 0, the call must besides have (argument & 0xffffffff) equal to
  // also_arg_value, e.g. tgkill's tgid (arg 0) against the caller's own pid.
  int also_arg_index = -1;
  uint64_t also_arg_value = 0;
  // When non-zero the call is not run but fails with this errno (e.g. clone3 with ENOSYS, so
  // glibc falls back to clone(2), whose flags a filter can read).
  int fail_errno = 0;
};

// Table helpers: Allow("read", "virtio queue reads"),
// AllowIfArg("ioctl", "the vCPU loop", 1, {KVM_RUN}).
[[nodiscard]] inline SyscallRule Allow(std::string name, std::string reason) {
  SyscallRule rule;
  rule.name = std::move(name);
  rule.reason = std::move(reason);
  return rule;
}
[[nodiscard]] inline SyscallRule AllowIfArg(std::string name, std::string reason, int arg_index,
                                            std::vector<uint64_t> allowed_values) {
  SyscallRule rule = Allow(std::move(name), std::move(reason));
  rule.arg_index = arg_index;
  rule.allowed_values = std::move(allowed_values);
  return rule;
}
// AllowIfArgMasked("mmap", "never executable", 2, PROT_EXEC, 0): allowed only when
// (argument `arg_index` & `mask`) == `value`, e.g. a flag bit that must be clear.
[[nodiscard]] inline SyscallRule AllowIfArgMasked(std::string name, std::string reason,
                                                  int arg_index, uint64_t mask, uint64_t value) {
  SyscallRule rule = AllowIfArg(std::move(name), std::move(reason), arg_index, {value});
  rule.arg_mask = mask;
  return rule;
}
// AndArgIs(AllowIfArg("tgkill", "...", 2, {SIGUSR1}), 0, getpid()): the rule, and besides
// argument `arg_index` (low 32 bits) must be `value`.
[[nodiscard]] inline SyscallRule AndArgIs(SyscallRule rule, int arg_index, uint64_t value) {
  rule.also_arg_index = arg_index;
  rule.also_arg_value = value;
  return rule;
}
// FailWith("clone3", "glibc falls back to clone(2)", ENOSYS): the call fails, the process lives.
[[nodiscard]] inline SyscallRule FailWith(std::string name, std::string reason, int error) {
  SyscallRule rule = Allow(std::move(name), std::move(reason));
  rule.fail_errno = error;
  return rule;
}

struct SeccompPolicy {
  std::string name;  // "vcpu", "vmm", "control", ...; used in log lines and errors.
  std::vector<SyscallRule> rules;
};

enum class SeccompMode {
  kEnforce,  // a call outside the policy kills the whole process with SIGSYS.
  kLog,      // the kernel logs such a call and lets it run; for finding missing rules.
};

// "enforce" or "log" (a --seccomp-level style flag); InvalidArgument otherwise.
[[nodiscard]] absl::StatusOr<SeccompMode> ParseSeccompMode(const std::string& text);

// A filter as the BPF program the kernel runs, ready to attach to any thread with one system
// call. ember-vmm compiles its programs once, before it starts threads, so a thread installing
// its own neither allocates nor runs libseccomp (and two threads never share a libseccomp
// context).
class BpfProgram {
 public:
  // Sets no_new_privs and attaches the program to the calling thread only: no
  // SECCOMP_FILTER_FLAG_TSYNC, as each thread kind of ember-vmm has its own filter. Threads the
  // caller creates afterwards inherit it. Irreversible. Logs loudly in kLog mode.
  [[nodiscard]] absl::Status InstallOnCallingThread() const;

  // Sets no_new_privs and attaches the program to every thread of the process at once
  // (SECCOMP_FILTER_FLAG_TSYNC): for a multi-threaded process with one policy, such as emberd
  // once its gRPC server runs. Threads created afterwards inherit it. Fails, naming the thread,
  // if a thread already has a filter the caller does not. Irreversible. Logs loudly in kLog mode.
  [[nodiscard]] absl::Status InstallOnAllThreads() const;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] SeccompMode mode() const { return mode_; }
  [[nodiscard]] size_t size() const { return instructions_.size(); }

 private:
  friend class SeccompFilter;
  BpfProgram(std::string name, SeccompMode mode, std::vector<sock_filter> instructions)
      : name_(std::move(name)), mode_(mode), instructions_(std::move(instructions)) {}
  absl::Status Attach(unsigned int flags) const;

  std::string name_;
  SeccompMode mode_;
  std::vector<sock_filter> instructions_;
};

// A compiled, not yet installed filter. Move-only; releases the libseccomp context.
class SeccompFilter {
 public:
  // Resolves every rule; InvalidArgument names an unknown syscall or a bad argument index.
  [[nodiscard]] static absl::StatusOr<SeccompFilter> Build(const SeccompPolicy& policy,
                                                           SeccompMode mode);

  // Sets no_new_privs and loads the filter on the calling thread (and the threads it creates
  // afterwards); other threads are untouched. Irreversible. Called by each thread of
  // ember-vmm before it runs guest code; logs loudly when the mode is kLog.
  [[nodiscard]] absl::Status Install() const;

  // The BPF program size, in instructions, as libseccomp generates it (for tests and logs).
  [[nodiscard]] absl::StatusOr<size_t> InstructionCount() const;

  // The BPF program libseccomp generates for this filter (see BpfProgram).
  [[nodiscard]] absl::StatusOr<BpfProgram> Compile() const;

  // Defined where Context is complete.
  SeccompFilter(SeccompFilter&&) noexcept;
  SeccompFilter& operator=(SeccompFilter&&) noexcept;
  ~SeccompFilter();

 private:
  struct Context;
  SeccompFilter(std::string name, SeccompMode mode, std::unique_ptr<Context> context);

  std::string name_;
  SeccompMode mode_;
  std::unique_ptr<Context> context_;
};

// Build() then Install(): the usual call.
[[nodiscard]] absl::Status InstallSeccompPolicy(const SeccompPolicy& policy, SeccompMode mode);

}  // namespace ember::jailer

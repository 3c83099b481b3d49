#include "jailer/seccomp_filter.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/base/unique_fd.h"

namespace ember::jailer {

// Owns the libseccomp context; kept out of the header so users need not see <seccomp.h>.
struct SeccompFilter::Context {
  scmp_filter_ctx ctx = nullptr;
  ~Context() {
    if (ctx != nullptr) seccomp_release(ctx);
  }
};

namespace {

// libseccomp returns -errno.
absl::Status SeccompError(int rc, const std::string& what, const std::string& policy) {
  return base::ErrnoError(-rc, what, absl::StrCat("(seccomp policy \"", policy, "\")"));
}

}  // namespace

absl::StatusOr<SeccompMode> ParseSeccompMode(const std::string& text) {
  if (text == "enforce") return SeccompMode::kEnforce;
  if (text == "log") return SeccompMode::kLog;
  return absl::InvalidArgumentError(
      absl::StrCat("seccomp mode \"", text, "\" is not \"enforce\" or \"log\""));
}

SeccompFilter::SeccompFilter(std::string name, SeccompMode mode, std::unique_ptr<Context> context)
    : name_(std::move(name)), mode_(mode), context_(std::move(context)) {}

SeccompFilter::~SeccompFilter() = default;
SeccompFilter::SeccompFilter(SeccompFilter&&) noexcept = default;
SeccompFilter& SeccompFilter::operator=(SeccompFilter&&) noexcept = default;

absl::StatusOr<SeccompFilter> SeccompFilter::Build(const SeccompPolicy& policy, SeccompMode mode) {
  // KILL_PROCESS, not KILL_THREAD: a vCPU thread dying alone would leave a half-alive VM.
  uint32_t default_action = mode == SeccompMode::kEnforce ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG;
  auto context = std::make_unique<Context>();
  context->ctx = seccomp_init(default_action);
  if (context->ctx == nullptr) {
    return absl::InternalError(
        absl::StrCat("seccomp_init failed for policy \"", policy.name, "\""));
  }
  for (const SyscallRule& rule : policy.rules) {
    int nr = seccomp_syscall_resolve_name(rule.name.c_str());
    if (nr == __NR_SCMP_ERROR) {
      return absl::InvalidArgumentError(absl::StrCat("seccomp policy \"", policy.name,
                                                     "\": unknown syscall \"", rule.name, "\""));
    }
    uint32_t action = rule.fail_errno != 0
                          ? SCMP_ACT_ERRNO(static_cast<uint32_t>(rule.fail_errno))
                          : SCMP_ACT_ALLOW;
    if (rule.arg_index < 0) {
      int rc = seccomp_rule_add(context->ctx, action, nr, 0);
      if (rc != 0) return SeccompError(rc, "seccomp_rule_add " + rule.name, policy.name);
      continue;
    }
    if (rule.arg_index > 5 || rule.allowed_values.empty() || rule.also_arg_index > 5 ||
        rule.also_arg_index == rule.arg_index) {
      return absl::InvalidArgumentError(
          absl::StrCat("seccomp policy \"", policy.name, "\": rule for \"", rule.name,
                       "\" needs an argument index 0-5 and at least one allowed value (and a second "
                       "index 0-5 that is another argument)"));
    }
    for (uint64_t value : rule.allowed_values) {
      scmp_arg_cmp cmp[2] = {
          {static_cast<unsigned>(rule.arg_index), SCMP_CMP_MASKED_EQ, rule.arg_mask,
           value & rule.arg_mask},
          {static_cast<unsigned>(rule.also_arg_index), SCMP_CMP_MASKED_EQ, 0xffffffffULL,
           rule.also_arg_value & 0xffffffffULL}};
      unsigned count = rule.also_arg_index >= 0 ? 2 : 1;
      int rc = seccomp_rule_add_array(context->ctx, action, nr, count, cmp);
      if (rc != 0) return SeccompError(rc, "seccomp_rule_add " + rule.name, policy.name);
    }
  }
  return SeccompFilter(policy.name, mode, std::move(context));
}

absl::Status SeccompFilter::Install() const {
  if (mode_ == SeccompMode::kLog) {
    EMBER_LOG(kWarn) << "seccomp policy \"" << name_
                     << "\" installed in LOG mode: calls outside it are logged, not stopped";
  }
  int rc = seccomp_load(context_->ctx);
  if (rc != 0) return SeccompError(rc, "seccomp_load", name_);
  EMBER_LOG(kDebug) << "seccomp policy \"" << name_ << "\" installed";
  return absl::OkStatus();
}

absl::StatusOr<size_t> SeccompFilter::InstructionCount() const {
  EMBER_ASSIGN_OR_RETURN(BpfProgram program, Compile());
  return program.size();
}

absl::StatusOr<BpfProgram> SeccompFilter::Compile() const {
  // libseccomp 2.5 exports the program only to an fd.
  base::UniqueFd fd(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
  if (!fd) return base::ErrnoError("memfd_create");
  int rc = seccomp_export_bpf(context_->ctx, fd.Get());
  if (rc != 0) return SeccompError(rc, "seccomp_export_bpf", name_);
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) return base::ErrnoError("fstat", "exported BPF");
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError(absl::StrCat("seccomp policy \"", name_, "\": exported BPF of ",
                                            size, " bytes is not a whole program"));
  }
  std::vector<sock_filter> instructions(size / sizeof(sock_filter));
  if (::pread(fd.Get(), instructions.data(), size, 0) != static_cast<ssize_t>(size)) {
    return base::ErrnoError("pread", "exported BPF");
  }
  return BpfProgram(name_, mode_, std::move(instructions));
}

absl::Status BpfProgram::Attach(unsigned int flags) const {
  if (mode_ == SeccompMode::kLog) {
    EMBER_LOG(kWarn) << "seccomp policy \"" << name_
                     << "\" installed in LOG mode: calls outside it are logged, not stopped";
  }
  // Unprivileged filters need no_new_privs; it also keeps an exec from gaining privileges.
  // With TSYNC the kernel copies it to every thread it attaches the filter to.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return base::ErrnoError("prctl(PR_SET_NO_NEW_PRIVS)", name_);
  }
  sock_fprog program{static_cast<unsigned short>(instructions_.size()),
                     const_cast<sock_filter*>(instructions_.data())};  // the kernel only reads it
  long rc = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program);
  if (rc < 0) return base::ErrnoError("seccomp(SECCOMP_SET_MODE_FILTER)", name_);
  if (rc > 0) {
    // TSYNC: thread `rc` has a filter of its own, so no thread got this one.
    return absl::FailedPreconditionError(
        absl::StrCat("seccomp policy \"", name_, "\": thread ", rc,
                     " has a different filter; no thread was filtered"));
  }
  return absl::OkStatus();
}

absl::Status BpfProgram::InstallOnCallingThread() const {
  return Attach(0);  // this thread only (no SECCOMP_FILTER_FLAG_TSYNC)
}

absl::Status BpfProgram::InstallOnAllThreads() const {
  return Attach(SECCOMP_FILTER_FLAG_TSYNC);
}

absl::Status InstallSeccompPolicy(const SeccompPolicy& policy, SeccompMode mode) {
  EMBER_ASSIGN_OR_RETURN(SeccompFilter filter, SeccompFilter::Build(policy, mode));
  return filter.Install();
}

}  // namespace ember::jailer

#include "rootfs/agent/process_limits.h"

#include <array>
#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace ember::agent {
namespace {

// capabilities(7), in number order: CAP_CHOWN is 0, CAP_CHECKPOINT_RESTORE 40.
constexpr std::array<const char*, 41> kCapabilityNames = {
    "CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID",          "CAP_KILL",           "CAP_SETGID",          "CAP_SETUID",
    "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",      "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",      "CAP_SYS_BOOT",        "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
    "CAP_LEASE",           "CAP_AUDIT_WRITE",    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",      "CAP_SYSLOG",          "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",     "CAP_PERFMON",         "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

absl::StatusOr<std::uint64_t> CapabilitySet(
    const google::protobuf::RepeatedPtrField<std::string>& names, const char* field) {
  std::uint64_t set = 0;
  for (const std::string& name : names) {
    std::optional<int> number = CapabilityNumber(name);
    if (!number) {
      return absl::InvalidArgumentError(std::string("exec: ") + field + ": unknown capability \"" +
                                        name + "\"");
    }
    set |= std::uint64_t{1} << *number;
  }
  return set;
}

absl::StatusOr<ProcessLimits::Limit> ParseRlimit(const std::string& text) {
  std::istringstream in(text);
  long long resource = -1;
  unsigned long long soft = 0;
  unsigned long long hard = 0;
  std::string rest;
  if (!(in >> resource >> soft >> hard) || (in >> rest) || resource < 0 ||
      resource >= RLIM_NLIMITS || soft > hard) {
    return absl::InvalidArgumentError("exec: rlimits: \"" + text +
                                      "\" is not \"RESOURCE SOFT HARD\" with SOFT <= HARD");
  }
  ProcessLimits::Limit limit;
  limit.resource = static_cast<int>(resource);
  limit.value.rlim_cur = static_cast<rlim_t>(soft);
  limit.value.rlim_max = static_cast<rlim_t>(hard);
  return limit;
}

}  // namespace

std::optional<int> CapabilityNumber(const std::string& name) {
  for (std::size_t i = 0; i < kCapabilityNames.size(); ++i) {
    if (name == kCapabilityNames[i]) return static_cast<int>(i);
  }
  return std::nullopt;
}

absl::StatusOr<ProcessLimits> LimitsOf(const v1::ExecRequest& request) {
  ProcessLimits limits;
  limits.additional_gids.assign(request.additional_gids().begin(),
                                request.additional_gids().end());
  for (const std::string& text : request.rlimits()) {
    absl::StatusOr<ProcessLimits::Limit> limit = ParseRlimit(text);
    if (!limit.ok()) return limit.status();
    limits.rlimits.push_back(*limit);
  }
  limits.no_new_privileges = request.no_new_privileges();
  if (request.set_capabilities()) {
    ProcessLimits::Capabilities caps;
    struct Field {
      const google::protobuf::RepeatedPtrField<std::string>& names;
      const char* name;
      std::uint64_t* set;
    };
    for (const Field& field : {Field{request.cap_bounding(), "cap_bounding", &caps.bounding},
                               Field{request.cap_effective(), "cap_effective", &caps.effective},
                               Field{request.cap_permitted(), "cap_permitted", &caps.permitted},
                               Field{request.cap_inheritable(), "cap_inheritable",
                                     &caps.inheritable},
                               Field{request.cap_ambient(), "cap_ambient", &caps.ambient}}) {
      absl::StatusOr<std::uint64_t> set = CapabilitySet(field.names, field.name);
      if (!set.ok()) return set.status();
      *field.set = *set;
    }
    limits.capabilities = caps;
  }
  return limits;
}

}  // namespace ember::agent

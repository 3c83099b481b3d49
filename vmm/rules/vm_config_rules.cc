#include "vmm/rules/vm_config_rules.h"

#include <net/if.h>
#include <sys/un.h>

#include <cctype>
#include <set>

// The bucket rule itself is virtio's, beside the arithmetic it keeps from overflowing; the
// header is self-contained (inline), so nothing of the VMM is linked.
#include "virtio/rate_limiter.h"
#include "vmm/rules/firecracker_compat.h"

namespace ember::rules {
namespace {

constexpr std::size_t kMaxDeviceIdLength = 64;
constexpr std::size_t kMaxPartuuidLength = 36;  // a GUID; an MBR one ("0eaa91a0-01") is shorter
constexpr std::uint64_t kMinGuestCid = 3;
constexpr std::uint64_t kMaxGuestCid = 0xfffffffeull;
// "_<port>" is appended for the per-port listeners the guest connects to.
constexpr std::size_t kMaxUdsPathLength =
    sizeof(sockaddr_un::sun_path) - 1 - (sizeof("_4294967295") - 1);
constexpr char kBadIdProblem[] = "\" must be 1-64 letters, digits, '_' or '-'";

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

// Empty, or what root=PARTUUID= takes: it goes onto the kernel command line as it is, so a
// space would smuggle in arguments of its own.
bool ValidPartuuid(const std::string& partuuid) {
  if (partuuid.size() > kMaxPartuuidLength) return false;
  for (char c : partuuid) {
    if (!std::isxdigit(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

absl::Status CheckMachine(const v1::MachineConfig& machine) {
  if (machine.has_vcpu_count() && (machine.vcpu_count() < 1 || machine.vcpu_count() > kMaxVcpus)) {
    return FieldError("machine-config.vcpu_count",
                      "must be between 1 and " + std::to_string(kMaxVcpus) + ", got " +
                          std::to_string(machine.vcpu_count()));
  }
  if (machine.has_mem_size_mib() &&
      (machine.mem_size_mib() < kMinMemMib || machine.mem_size_mib() > kMaxMemMib)) {
    return FieldError("machine-config.mem_size_mib",
                      "must be between " + std::to_string(kMinMemMib) + " and " +
                          std::to_string(kMaxMemMib) + " MiB, got " +
                          std::to_string(machine.mem_size_mib()));
  }
  return absl::OkStatus();
}

absl::Status CheckDrive(const v1::Drive& drive, const std::string& where) {
  if (!ValidDeviceId(drive.drive_id())) {
    return FieldError(where + ".drive_id", "\"" + drive.drive_id() + kBadIdProblem);
  }
  if (drive.path_on_host().empty()) return FieldError(where + ".path_on_host", "is required");
  if (!ValidPartuuid(drive.partuuid())) {
    return FieldError(where + ".partuuid",
                      "\"" + drive.partuuid() +
                          "\" is not a partition UUID (hex digits and '-', at most 36)");
  }
  // Firecracker's names; Ember's io_uring engine is its "Async".
  const std::string& engine = drive.io_engine();
  if (!engine.empty() && engine != "Async" && engine != "Sync") {
    return FieldError(where + ".io_engine", "\"" + engine + "\" is not Async or Sync");
  }
  const std::string& cache = drive.cache_type();
  if (!cache.empty() && cache != "Unsafe" && cache != "Writeback") {
    return FieldError(where + ".cache_type", "\"" + cache + "\" is not Unsafe or Writeback");
  }
  return CheckRateLimiter(drive.rate_limiter(), where + ".rate_limiter");
}

absl::Status CheckDrives(const v1::VmConfig& config) {
  std::set<std::string> ids;
  int roots = 0;
  for (int i = 0; i < config.drives_size(); ++i) {
    const v1::Drive& drive = config.drives(i);
    const std::string where = "drives[" + std::to_string(i) + "]";
    if (absl::Status status = CheckDrive(drive, where); !status.ok()) return status;
    if (!ids.insert(drive.drive_id()).second) {
      return FieldError(where + ".drive_id",
                        "\"" + drive.drive_id() + "\" is used by another drive");
    }
    if (drive.is_root_device() && ++roots > 1) {
      return FieldError(where + ".is_root_device", "only one drive can be root");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckInterface(const v1::NetworkInterface& ni, const std::string& where) {
  if (!ValidDeviceId(ni.iface_id())) {
    return FieldError(where + ".iface_id", "\"" + ni.iface_id() + kBadIdProblem);
  }
  const std::string& tap = ni.host_dev_name();
  if (tap.empty()) return FieldError(where + ".host_dev_name", "is required");
  if (tap.size() >= IFNAMSIZ || tap.find('/') != std::string::npos) {
    return FieldError(where + ".host_dev_name",
                      "\"" + tap + "\" is not an interface name (1-" +
                          std::to_string(IFNAMSIZ - 1) + " characters, no '/')");
  }
  if (absl::Status status = CheckRateLimiter(ni.rx_rate_limiter(), where + ".rx_rate_limiter");
      !status.ok()) {
    return status;
  }
  return CheckRateLimiter(ni.tx_rate_limiter(), where + ".tx_rate_limiter");
}

absl::Status CheckInterfaces(const v1::VmConfig& config) {
  std::set<std::string> ids;
  std::set<std::string> taps;
  for (int i = 0; i < config.network_interfaces_size(); ++i) {
    const v1::NetworkInterface& ni = config.network_interfaces(i);
    const std::string where = "network-interfaces[" + std::to_string(i) + "]";
    if (absl::Status status = CheckInterface(ni, where); !status.ok()) return status;
    if (!ids.insert(ni.iface_id()).second) {
      return FieldError(where + ".iface_id",
                        "\"" + ni.iface_id() + "\" is used by another interface");
    }
    if (!taps.insert(ni.host_dev_name()).second) {
      return FieldError(where + ".host_dev_name",
                        "\"" + ni.host_dev_name() + "\" is used by another interface");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckVsock(const v1::Vsock& vsock) {
  if (!ValidDeviceId(vsock.vsock_id())) {
    return FieldError("vsock.vsock_id", "\"" + vsock.vsock_id() + kBadIdProblem);
  }
  if (vsock.guest_cid() < kMinGuestCid || vsock.guest_cid() > kMaxGuestCid) {
    return FieldError("vsock.guest_cid",
                      std::to_string(vsock.guest_cid()) + " is outside [3, 4294967294]");
  }
  if (vsock.uds_path().empty()) return FieldError("vsock.uds_path", "is required");
  if (vsock.uds_path().size() > kMaxUdsPathLength) {
    return FieldError("vsock.uds_path",
                      "\"" + vsock.uds_path() + "\" is longer than " +
                          std::to_string(kMaxUdsPathLength) +
                          " bytes (a Unix socket path, with room for \"_<port>\")");
  }
  return absl::OkStatus();
}

}  // namespace

std::uint32_t VcpuCountOf(const v1::VmConfig& config) {
  const v1::MachineConfig& machine = config.machine_config();
  return machine.has_vcpu_count() ? machine.vcpu_count() : kDefaultVcpus;
}

std::uint32_t MemMibOf(const v1::VmConfig& config) {
  const v1::MachineConfig& machine = config.machine_config();
  return machine.has_mem_size_mib() ? machine.mem_size_mib() : kDefaultMemMib;
}

bool ValidDeviceId(const std::string& id) {
  if (id.empty() || id.size() > kMaxDeviceIdLength) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::Status CheckTokenBucket(const v1::TokenBucket& bucket, const std::string& field) {
  return virtio::ValidateTokenBucket({bucket.size(), bucket.one_time_burst(), bucket.refill_time()},
                                     field);
}

absl::Status CheckRateLimiter(const v1::RateLimiter& limiter, const std::string& field) {
  if (absl::Status status = CheckTokenBucket(limiter.bandwidth(), field + ".bandwidth");
      !status.ok()) {
    return status;
  }
  return CheckTokenBucket(limiter.ops(), field + ".ops");
}

absl::Status CheckVmConfig(const v1::VmConfig& config) {
  if (absl::Status status = CheckFirecrackerFeatures(config); !status.ok()) return status;
  if (absl::Status status = CheckMachine(config.machine_config()); !status.ok()) return status;
  const std::string& boot_args = config.boot_source().boot_args();
  if (boot_args.size() > kMaxCmdlineBytes) {
    return FieldError("boot-source.boot_args",
                      "at most " + std::to_string(kMaxCmdlineBytes) + " bytes, got " +
                          std::to_string(boot_args.size()));
  }
  if (absl::Status status = CheckDrives(config); !status.ok()) return status;
  if (absl::Status status = CheckInterfaces(config); !status.ok()) return status;
  if (config.has_vsock()) return CheckVsock(config.vsock());
  return absl::OkStatus();
}

}  // namespace ember::rules

#include "vmm/emberd/functions/function_rules.h"

#include <cctype>

namespace ember::emberd::functions {
namespace {

absl::Status Invalid(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(field + ": " + problem);
}

absl::Status AtMost(const std::string& field, std::uint64_t value, std::uint64_t limit) {
  if (value <= limit) return absl::OkStatus();
  return Invalid(field, "at most " + std::to_string(limit) + ", got " + std::to_string(value));
}

absl::Status AbsolutePath(const std::string& field, const std::string& path) {
  if (path.empty() || path.front() == '/') return absl::OkStatus();
  return Invalid(field, "must be an absolute path, got \"" + path + "\"");
}

constexpr char kTestGuestArgs[] = "console=ttyS0 ember.test=agent";
constexpr char kLinuxArgs[] = "console=ttyS0 reboot=k panic=1 init=/sbin/ember-init";
// The guest's side of kFunctionTap: 172.16.0.2/30, its gateway the tap's host side
// (172.16.0.1, emberd's kFunctionTapAddress).
constexpr char kLinuxNetworkArgs[] = " ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off";

}  // namespace

absl::Status ValidateName(const std::string& field, const std::string& name) {
  if (name.empty()) return Invalid(field, "is required");
  if (name.size() > kMaxNameLength) {
    return Invalid(field, "at most 32 characters, got " + std::to_string(name.size()));
  }
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) {
    return Invalid(field, "must start with a letter or digit, got \"" + name + "\"");
  }
  for (char c : name) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return Invalid(field, "only [a-z0-9-] allowed, got \"" + name + "\"");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePool(const std::string& field, const v1::FunctionPool& pool) {
  if (auto s = AtMost(field + ".min_warm", pool.min_warm(), kMaxMinWarm); !s.ok()) return s;
  if (auto s = AtMost(field + ".max_concurrency", pool.max_concurrency(), kMaxConcurrency);
      !s.ok()) {
    return s;
  }
  if (auto s = AtMost(field + ".keep_warm_ms", pool.keep_warm_ms(), kMaxKeepWarmMs); !s.ok()) {
    return s;
  }
  return AtMost(field + ".idle_to_zero_ms", pool.idle_to_zero_ms(), kMaxIdleToZeroMs);
}

absl::Status ValidateDeploy(const v1::DeployFunctionRequest& request) {
  if (auto s = ValidateName("name", request.name()); !s.ok()) return s;
  if (request.mem_size_mib() == 0) return Invalid("mem_size_mib", "is required (16 to 1048576)");
  if (request.mem_size_mib() < 16 || request.mem_size_mib() > 1'048'576) {
    return Invalid("mem_size_mib",
                   "16 to 1048576 MiB, got " + std::to_string(request.mem_size_mib()));
  }
  if (auto s = AtMost("vcpu_count", request.vcpu_count(), 32); !s.ok()) return s;
  const bool image = !request.root_image_path().empty();
  const bool archive = !request.oci_archive_path().empty();
  if (image == archive) {
    return Invalid("root_image_path", "exactly one of root_image_path and oci_archive_path is "
                                      "required");
  }
  for (const auto& [field, path] :
       {std::pair<std::string, std::string>{"kernel_image_path", request.kernel_image_path()},
        {"root_image_path", request.root_image_path()},
        {"oci_archive_path", request.oci_archive_path()}}) {
    if (auto s = AbsolutePath(field, path); !s.ok()) return s;
  }
  if (request.warmup_payloads_size() > kMaxWarmups) {
    return Invalid("warmup_payloads", "at most 16, got " +
                                          std::to_string(request.warmup_payloads_size()));
  }
  for (int i = 0; i < request.warmup_payloads_size(); ++i) {
    if (auto s = AtMost("warmup_payloads[" + std::to_string(i) + "]",
                        request.warmup_payloads(i).size(), kMaxPayloadBytes);
        !s.ok()) {
      return s;
    }
  }
  return ValidatePool("pool", request.pool());
}

absl::Status ValidateInvoke(const v1::FunctionInvokeRequest& request) {
  if (auto s = ValidateName("name", request.name()); !s.ok()) return s;
  if (auto s = AtMost("payload", request.payload().size(), kMaxPayloadBytes); !s.ok()) {
    return Invalid("payload", std::to_string(request.payload().size()) +
                                  " bytes, more than the " + std::to_string(kMaxPayloadBytes) +
                                  " an invocation takes");
  }
  return AtMost("timeout_ms", request.timeout_ms(), kMaxInvokeTimeoutMs);
}

std::uint32_t Concurrency(const v1::FunctionPool& pool) {
  return pool.max_concurrency() == 0 ? kDefaultConcurrency : pool.max_concurrency();
}

std::uint32_t InvokeTimeoutMs(const v1::FunctionInvokeRequest& request) {
  return request.timeout_ms() == 0 ? kDefaultInvokeTimeoutMs : request.timeout_ms();
}

v1::VmConfig DeployConfig(const v1::DeployFunctionRequest& request, const std::string& image,
                          const std::string& vsock_uds_path) {
  v1::VmConfig config;
  v1::BootSource* boot = config.mutable_boot_source();
  boot->set_kernel_image_path(request.kernel_image_path());
  if (!request.boot_args().empty()) {
    boot->set_boot_args(request.boot_args());
  } else if (!request.kernel_image_path().empty()) {
    // A Linux guest with network on gets the address every clone keeps (ember-init reads the
    // kernel's ip= as the kernel documents it).
    boot->set_boot_args(std::string(kLinuxArgs) + (request.network() ? kLinuxNetworkArgs : ""));
  } else {
    boot->set_boot_args(kTestGuestArgs);
  }
  config.mutable_machine_config()->set_vcpu_count(
      request.vcpu_count() == 0 ? 1 : request.vcpu_count());
  config.mutable_machine_config()->set_mem_size_mib(request.mem_size_mib());
  v1::Drive* root = config.add_drives();
  root->set_drive_id("rootfs");
  root->set_path_on_host(image);
  root->set_is_root_device(true);
  // Every clone shares the one image: none may change it under the others.
  root->set_is_read_only(true);
  if (request.network()) {
    // Every clone of the function finds this tap in its own namespace (clone_network.h), and
    // its guest keeps this address and MAC.
    v1::NetworkInterface* iface = config.add_network_interfaces();
    iface->set_iface_id("eth0");
    iface->set_host_dev_name(kFunctionTap);
    iface->set_guest_mac(kFunctionGuestMac);
  }
  v1::Vsock* vsock = config.mutable_vsock();
  vsock->set_vsock_id("vsock0");
  vsock->set_guest_cid(3);
  vsock->set_uds_path(vsock_uds_path);
  return config;
}

}  // namespace ember::emberd::functions

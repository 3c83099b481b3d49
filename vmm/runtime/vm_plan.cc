#include "vm_plan.h"

#include <cstdio>
#include <functional>

namespace ember::runtime {
namespace {

// ember-init's rule for a hostname (rootfs/init/guest_config.cc): it refuses others.
bool UsableHostname(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
  }
  return true;
}

// A locally administered unicast MAC derived from the container id, stable across restarts.
std::string MacFor(const std::string& id) {
  std::size_t h = std::hash<std::string>{}(id);
  char mac[18];
  std::snprintf(mac, sizeof(mac), "06:%02x:%02x:%02x:%02x:%02x", static_cast<unsigned>(h & 0xff),
                static_cast<unsigned>((h >> 8) & 0xff), static_cast<unsigned>((h >> 16) & 0xff),
                static_cast<unsigned>((h >> 24) & 0xff), static_cast<unsigned>((h >> 32) & 0xff));
  return mac;
}

}  // namespace

v1::VmConfig PlanVm(const Bundle& bundle, const RuntimeConfig& config, const std::string& image,
                    bool image_writable, const std::string& vsock_path, const std::string& id) {
  v1::VmConfig vm;
  const std::string kernel = !bundle.kernel.empty() ? bundle.kernel.string() : config.kernel;
  std::string boot_args = !bundle.boot_args.empty()   ? bundle.boot_args
                          : !config.boot_args.empty() ? config.boot_args
                                                      : DefaultBootArgs(kernel);
  if (!kernel.empty() && UsableHostname(bundle.hostname)) {
    boot_args += " ember.hostname=" + bundle.hostname;
  }
  v1::BootSource* boot = vm.mutable_boot_source();
  boot->set_kernel_image_path(kernel);
  if (!kernel.empty()) boot->set_initrd_path(config.initrd);
  boot->set_boot_args(boot_args);
  vm.mutable_machine_config()->set_vcpu_count(bundle.vcpus);
  vm.mutable_machine_config()->set_mem_size_mib(bundle.memory_mib);

  v1::Drive* root = vm.add_drives();
  root->set_drive_id("rootfs");
  root->set_path_on_host(image);
  root->set_is_root_device(true);
  root->set_is_read_only(!image_writable);

  v1::Vsock* vsock = vm.mutable_vsock();
  vsock->set_vsock_id("agent");
  vsock->set_guest_cid(3);
  vsock->set_uds_path(vsock_path);

  if (!bundle.network_namespace.empty()) {
    v1::NetworkInterface* net = vm.add_network_interfaces();
    net->set_iface_id("eth0");
    net->set_host_dev_name(kTapName);
    net->set_guest_mac(MacFor(id));
  }
  return vm;
}

v1::ExecRequest PlanExec(const BundleProcess& process) {
  v1::ExecRequest exec;
  for (const std::string& arg : process.args) exec.add_argv(arg);
  for (const std::string& env : process.env) exec.add_env(env);
  exec.set_cwd(process.cwd);
  exec.set_uid(process.uid);
  exec.set_gid(process.gid);
  exec.set_tty(process.terminal);
  exec.set_rows(process.console_height);
  exec.set_cols(process.console_width);
  for (uint32_t gid : process.additional_gids) exec.add_additional_gids(gid);
  for (const BundleRlimit& limit : process.rlimits) {
    exec.add_rlimits(std::to_string(limit.resource) + " " + std::to_string(limit.soft) + " " +
                     std::to_string(limit.hard));
  }
  exec.set_no_new_privileges(process.no_new_privileges);
  if (process.capabilities) {
    const BundleCapabilities& caps = *process.capabilities;
    exec.set_set_capabilities(true);
    exec.mutable_cap_bounding()->Add(caps.bounding.begin(), caps.bounding.end());
    exec.mutable_cap_effective()->Add(caps.effective.begin(), caps.effective.end());
    exec.mutable_cap_inheritable()->Add(caps.inheritable.begin(), caps.inheritable.end());
    exec.mutable_cap_permitted()->Add(caps.permitted.begin(), caps.permitted.end());
    exec.mutable_cap_ambient()->Add(caps.ambient.begin(), caps.ambient.end());
  }
  return exec;
}

}  // namespace ember::runtime

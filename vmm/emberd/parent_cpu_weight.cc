#include "vmm/emberd/parent_cpu_weight.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "vmm/base/logging.h"
#include "vmm/base/unique_fd.h"

namespace ember::emberd {
namespace {

std::string WeightFile(int version) { return version == 2 ? "cpu.weight" : "cpu.shares"; }

}  // namespace

std::uint64_t ParentCpuWeight::Cap(int version, unsigned host_cpus) {
  const std::uint64_t cpus = std::max(1u, host_cpus);
  if (version == 2) return std::min<std::uint64_t>(100 * cpus, 10000);
  return std::min<std::uint64_t>(1024 * cpus, 262144);
}

std::uint64_t ParentCpuWeight::Clamp(int version, unsigned host_cpus, std::uint64_t sum) {
  const std::uint64_t cap = Cap(version, host_cpus);
  if (version == 2) return sum == 0 ? 100 : std::clamp<std::uint64_t>(sum, 1, cap);
  return sum == 0 ? 1024 : std::clamp<std::uint64_t>(sum, 2, cap);
}

void ParentCpuWeight::Add(const std::string& vm_id, const std::vector<std::string>& jailer_args) {
  if (cgroups_.version == 0) return;
  const std::string prefix = WeightFile(cgroups_.version) + "=";
  for (std::size_t i = 0; i + 1 < jailer_args.size(); i += 2) {
    const std::string& value = jailer_args[i + 1];
    if (jailer_args[i] != "--cgroup" || value.rfind(prefix, 0) != 0) continue;
    std::uint64_t weight = 0;
    auto [end, ec] =
        std::from_chars(value.data() + prefix.size(), value.data() + value.size(), weight);
    if (ec != std::errc() || end != value.data() + value.size()) return;
    std::lock_guard lock(mu_);
    weights_[vm_id] = weight;
    WriteLocked();
    return;
  }
}

void ParentCpuWeight::Remove(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  if (weights_.erase(vm_id) == 0) return;
  WriteLocked();
}

void ParentCpuWeight::WriteLocked() {
  std::uint64_t sum = 0;
  for (const auto& [vm_id, weight] : weights_) sum += weight;
  const std::string value = std::to_string(Clamp(cgroups_.version, cgroups_.host_cpus, sum));
  for (const std::string& mount : cgroups_.mounts) {
    const std::string path = mount + "/" + cgroups_.parent + "/" + WeightFile(cgroups_.version);
    // Only the hierarchy that carries cpu has the file, and only once the parent exists.
    base::UniqueFd file(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
    if (!file) continue;
    if (::write(file.Get(), value.data(), value.size()) < 0) {
      EMBER_LOG(kWarn) << "emberd: cannot set " << path << " to " << value << ": "
                       << std::strerror(errno);
    }
  }
}

}  // namespace ember::emberd

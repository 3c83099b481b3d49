#include "vmm/rules/firecracker_compat.h"

#include <array>

#include "absl/strings/ascii.h"

namespace ember::rules {
namespace {

struct UnsupportedSection {
  std::string_view json_name;
  std::string_view feature;
};

constexpr std::string_view kMmds = "MMDS (the microVM metadata service)";

constexpr std::array<UnsupportedSection, 7> kUnsupportedSections = {{
    {"balloon", "the balloon device"},
    {"entropy", "the entropy device (virtio-rng)"},
    {"mmds-config", kMmds},
    {"mmds-version", kMmds},
    {"cpu-config", "custom CPU templates"},
    {"pmem", "virtio-pmem devices"},
    {"memory-hotplug", "memory hotplug"},
}};

// Firecracker's static CPU templates (its cpu_template values other than None).
constexpr std::array<std::string_view, 6> kStaticCpuTemplates = {"C3",   "T2",  "T2S",
                                                                 "T2CL", "T2A", "V1N1"};

absl::Status Unsupported(const std::string& field, std::string_view what) {
  return absl::InvalidArgumentError(field + ": Ember does not support " + std::string(what));
}

absl::Status Deprecated(const std::string& field, const std::string& current) {
  return absl::InvalidArgumentError(field + ": a deprecated name of " + current + "; give " +
                                    current);
}

// Moves `old_value` (the deprecated name `old_field`) into `*current` (named `current_field`).
absl::Status MoveName(std::string* old_value, const std::string& old_field, std::string* current,
                      const std::string& current_field) {
  if (old_value->empty()) return absl::OkStatus();
  if (!current->empty() && *current != *old_value) {
    return absl::InvalidArgumentError(old_field + ": \"" + *old_value + "\" disagrees with " +
                                      current_field + " \"" + *current +
                                      "\" (the same setting by its deprecated name); give one");
  }
  *current = std::move(*old_value);
  old_value->clear();
  return absl::OkStatus();
}

absl::Status CheckMachine(const v1::MachineConfig& machine) {
  if (machine.has_ht_enabled()) return Deprecated("machine-config.ht_enabled", "smt");
  if (machine.smt()) return Unsupported("machine-config.smt", "SMT (simultaneous multithreading)");
  const std::string& huge_pages = machine.huge_pages();
  if (huge_pages == "2M") {
    return Unsupported("machine-config.huge_pages", "huge pages (\"2M\"); give None");
  }
  if (!huge_pages.empty() && huge_pages != "None") {
    return absl::InvalidArgumentError("machine-config.huge_pages: \"" + huge_pages +
                                      "\" is not None or 2M");
  }
  for (std::string_view name : kStaticCpuTemplates) {
    if (machine.cpu_template() == name) {
      return Unsupported("machine-config.cpu_template",
                         "Firecracker's static CPU template \"" + machine.cpu_template() +
                             "\" (supported: None or host, baseline)");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDevices(const v1::VmConfig& config) {
  for (int i = 0; i < config.drives_size(); ++i) {
    if (!config.drives(i).socket().empty()) {
      return Unsupported("drives[" + std::to_string(i) + "].socket", "vhost-user drives");
    }
  }
  for (int i = 0; i < config.network_interfaces_size(); ++i) {
    if (config.network_interfaces(i).allow_mmds_requests()) {
      return Unsupported("network-interfaces[" + std::to_string(i) + "].allow_mmds_requests",
                         kMmds);
    }
  }
  if (!config.serial().serial_out_path().empty()) {
    return Unsupported("serial.serial_out_path",
                       "a serial output path in the config; give ember-vmm --serial-out");
  }
  if (config.serial().rate_limiter().size() != 0) {
    return Unsupported("serial.rate_limiter",
                       "a rate limit on the serial console (console.max_bytes bounds it)");
  }
  return absl::OkStatus();
}

absl::Status CheckLogging(const v1::VmConfig& config) {
  const v1::Logger& logger = config.logger();
  if (!logger.log_fifo().empty()) return Deprecated("logger.log_fifo", "log_path");
  if (!logger.metrics_fifo().empty()) {
    return Deprecated("logger.metrics_fifo", "metrics.metrics_path");
  }
  if (!config.metrics().metrics_fifo().empty()) {
    return Deprecated("metrics.metrics_fifo", "metrics_path");
  }
  if (absl::AsciiStrToLower(logger.level()) == "off") {
    return Unsupported("logger.level", "turning its log off (\"Off\"); Error logs the least");
  }
  if (!logger.module().empty()) {
    return Unsupported("logger.module", "filtering its log by module");
  }
  if (logger.options_size() != 0) {
    return Unsupported("logger.options", "logger options (\"" + logger.options(0) + "\")");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ResolveDeprecatedNames(v1::VmConfig* config) {
  if (config->has_machine_config() && config->machine_config().has_ht_enabled()) {
    v1::MachineConfig* machine = config->mutable_machine_config();
    if (machine->smt() && !machine->ht_enabled()) {
      return absl::InvalidArgumentError(
          "machine-config.ht_enabled: false disagrees with smt true (the same setting by its "
          "deprecated name); give one");
    }
    machine->set_smt(machine->smt() || machine->ht_enabled());
    machine->clear_ht_enabled();
  }
  if (config->has_logger()) {
    v1::Logger* logger = config->mutable_logger();
    if (absl::Status status = MoveName(logger->mutable_log_fifo(), "logger.log_fifo",
                                       logger->mutable_log_path(), "logger.log_path");
        !status.ok()) {
      return status;
    }
    if (!logger->metrics_fifo().empty()) {
      if (absl::Status status =
              MoveName(logger->mutable_metrics_fifo(), "logger.metrics_fifo",
                       config->mutable_metrics()->mutable_metrics_path(), "metrics.metrics_path");
          !status.ok()) {
        return status;
      }
    }
  }
  if (config->has_metrics()) {
    v1::Metrics* metrics = config->mutable_metrics();
    if (absl::Status status = MoveName(metrics->mutable_metrics_fifo(), "metrics.metrics_fifo",
                                       metrics->mutable_metrics_path(), "metrics.metrics_path");
        !status.ok()) {
      return status;
    }
  }
  if (config->has_vsock() && config->vsock().vsock_id().empty()) {
    config->mutable_vsock()->set_vsock_id("vsock");
  }
  return absl::OkStatus();
}

bool IsUnsupportedSection(std::string_view json_name) {
  for (const UnsupportedSection& section : kUnsupportedSections) {
    if (section.json_name == json_name) return true;
  }
  return false;
}

absl::Status UnsupportedSectionError(std::string_view json_name) {
  for (const UnsupportedSection& section : kUnsupportedSections) {
    if (section.json_name == json_name) return Unsupported(std::string(json_name), section.feature);
  }
  return absl::InternalError("\"" + std::string(json_name) + "\" is not an unsupported section");
}

absl::Status CheckFirecrackerFeatures(const v1::VmConfig& config) {
  if (config.has_balloon()) return UnsupportedSectionError("balloon");
  if (config.has_entropy()) return UnsupportedSectionError("entropy");
  if (config.has_mmds_config()) return UnsupportedSectionError("mmds-config");
  if (!config.mmds_version().empty()) return UnsupportedSectionError("mmds-version");
  if (config.has_cpu_config()) return UnsupportedSectionError("cpu-config");
  if (config.pmem_size() != 0) return UnsupportedSectionError("pmem");
  if (config.has_memory_hotplug()) return UnsupportedSectionError("memory-hotplug");
  if (absl::Status status = CheckMachine(config.machine_config()); !status.ok()) return status;
  if (absl::Status status = CheckDevices(config); !status.ok()) return status;
  return CheckLogging(config);
}

}  // namespace ember::rules

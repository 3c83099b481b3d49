#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "ember/v1/vm_config.pb.h"

// What Ember does with the parts of Firecracker's configuration format that it has in another
// form or not at all. Proto-only, like the rest of the rules: shared by ember-config (the
// config file), ember-vmm, emberd and the Firecracker API. Nothing is ignored: a deprecated
// name is moved to its current one, a feature Ember lacks is refused with one line naming it.
namespace ember::rules {

// Moves the older names Firecracker still reads to the current ones: machine-config.ht_enabled
// to smt, logger.log_fifo to log_path, logger.metrics_fifo and metrics.metrics_fifo to
// metrics.metrics_path. A vsock without a vsock_id (optional in Firecracker) gets "vsock".
// Both names given with different values: INVALID_ARGUMENT naming both. Call it on a config
// read from Firecracker's JSON before CheckVmConfig, which refuses names left unresolved.
[[nodiscard]] absl::Status ResolveDeprecatedNames(v1::VmConfig* config);

// Whether `json_name` is a top-level section of Firecracker's format for a feature Ember does
// not have (balloon, entropy, mmds-config, mmds-version, cpu-config, pmem, memory-hotplug).
[[nodiscard]] bool IsUnsupportedSection(std::string_view json_name);

// The one-line refusal of such a section: "<json_name>: Ember does not support <feature>".
[[nodiscard]] absl::Status UnsupportedSectionError(std::string_view json_name);

// Refuses what `config` asks for that Ember does not have: a section above, or a field with a
// value Ember lacks (SMT, huge pages, Firecracker's static CPU templates, vhost-user drives,
// MMDS on an interface, a log module filter or level Off, old logger options, a serial
// output path or rate limit), and deprecated names ResolveDeprecatedNames did not move. OK or INVALID_ARGUMENT
// "<field>: Ember does not support ...". Part of CheckVmConfig.
[[nodiscard]] absl::Status CheckFirecrackerFeatures(const v1::VmConfig& config);

}  // namespace ember::rules

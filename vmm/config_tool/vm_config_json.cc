#include "vmm/config_tool/vm_config_json.h"

#include <fstream>
#include <sstream>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "vmm/base/status.h"
#include "vmm/rules/firecracker_compat.h"
#include "vmm/rules/vm_config_rules.h"

namespace ember::config_tool {
namespace {

// Protobuf's messages name sections by their proto names; users wrote the JSON names.
std::string ToUserSpelling(std::string message) {
  message = absl::StrReplaceAll(message, {{"boot_source", "boot-source"},
                                          {"machine_config", "machine-config"},
                                          {"network_interfaces", "network-interfaces"},
                                          {"\n", " "}});
  // Collapse the caret line protobuf adds under syntax errors.
  return std::string(absl::StripAsciiWhitespace(absl::StrReplaceAll(message, {{" ^", ""}})));
}

// A top-level section for a feature Ember does not have is refused by its name alone, whatever
// it holds: cpu-config may be a path or a template, and a newer Firecracker may add fields to
// any of them, which the typed parse would call unknown. Read as a generic JSON object by the
// same parser, only once the typed parse failed, so that a good file is parsed once; null or []
// is off. A section the typed parse did read is refused by the rules, with the same line.
absl::Status CheckUnsupportedSections(const std::string& json) {
  google::protobuf::Struct top;
  if (!google::protobuf::util::JsonStringToMessage(json, &top).ok()) {
    return absl::OkStatus();  // not an object: the typed parse says what is wrong
  }
  for (const auto& [name, value] : top.fields()) {
    if (!rules::IsUnsupportedSection(name)) continue;
    bool off = value.has_null_value() ||
               (value.has_list_value() && value.list_value().values_size() == 0);
    if (!off) return rules::UnsupportedSectionError(name);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::VmConfig> ParseVmConfigJson(const std::string& json) {
  v1::VmConfig config;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, &config, options);
  if (!status.ok()) {
    if (absl::Status unsupported = CheckUnsupportedSections(json); !unsupported.ok()) {
      return unsupported;
    }
    return absl::InvalidArgumentError(ToUserSpelling(std::string(status.message())));
  }
  if (absl::Status resolved = rules::ResolveDeprecatedNames(&config); !resolved.ok()) {
    return resolved;
  }
  if (absl::Status checked = rules::CheckVmConfig(config); !checked.ok()) return checked;
  return config;
}

absl::StatusOr<v1::VmConfig> LoadVmConfigJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return base::ErrnoError("cannot open config file", "\"" + path + "\"");
  std::stringstream text;
  text << in.rdbuf();
  auto config = ParseVmConfigJson(text.str());
  if (!config.ok()) {
    return absl::InvalidArgumentError("config file \"" + path + "\": " +
                                      std::string(config.status().message()));
  }
  return config;
}

}  // namespace ember::config_tool

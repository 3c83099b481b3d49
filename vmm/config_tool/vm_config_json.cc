#include "vmm/config_tool/vm_config_json.h"

#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_replace.h"
#include "vmm/base/status.h"

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

}  // namespace

absl::StatusOr<v1::VmConfig> ParseVmConfigJson(const std::string& json) {
  v1::VmConfig config;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json, &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(ToUserSpelling(std::string(status.message())));
  }
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

#include "rootfs/image/image_config.h"

#include <nlohmann/json.hpp>

#include "ember/v1/agent.pb.h"

namespace ember::rootfs {
namespace {

using Json = nlohmann::json;

absl::Status ReadStrings(const Json& config, const char* key, std::vector<std::string>* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) {
    return absl::InvalidArgumentError(std::string("image config: ") + key +
                                      " is not a list of strings");
  }
  for (const Json& item : *it) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(std::string("image config: ") + key +
                                        " is not a list of strings");
    }
    out->push_back(item.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ReadString(const Json& config, const char* key, std::string* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(std::string("image config: ") + key + " is not a string");
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageConfig> ParseOciImageConfig(std::string_view json) {
  Json blob = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (blob.is_discarded() || !blob.is_object()) {
    return absl::InvalidArgumentError("image config is not a JSON object");
  }
  ImageConfig result;
  auto config = blob.find("config");
  if (config == blob.end() || config->is_null()) return result;
  if (!config->is_object())
    return absl::InvalidArgumentError("image config: config is not an object");
  for (auto [key, out] : {std::pair{"Entrypoint", &result.entrypoint},
                          std::pair{"Cmd", &result.cmd}, std::pair{"Env", &result.env}}) {
    if (absl::Status status = ReadStrings(*config, key, out); !status.ok()) return status;
  }
  if (absl::Status status = ReadString(*config, "WorkingDir", &result.working_dir); !status.ok()) {
    return status;
  }
  if (absl::Status status = ReadString(*config, "User", &result.user); !status.ok()) {
    return status;
  }
  return result;
}

std::string SerializeImageConfig(const ImageConfig& config) {
  ember::v1::ImageConfig message;
  for (const std::string& arg : config.entrypoint) message.add_entrypoint(arg);
  for (const std::string& arg : config.cmd) message.add_cmd(arg);
  for (const std::string& var : config.env) message.add_env(var);
  message.set_working_dir(config.working_dir);
  message.set_user(config.user);
  return message.SerializeAsString();
}

}  // namespace ember::rootfs

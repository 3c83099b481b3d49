#include "rootfs/agent/image_config.h"

#include <cerrno>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "vmm/base/status.h"

namespace ember::agent {
namespace {

constexpr std::size_t kMaxImageConfigBytes = 1 << 20;

std::optional<std::uint32_t> ParseId(const std::string& text) {
  std::uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// The first line of an /etc/passwd-style file whose field `index` is `value`, split at ':'.
std::optional<std::vector<std::string>> FindEntry(const std::string& file, std::size_t index,
                                                  const std::string& value) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream split(line);
    for (std::string field; std::getline(split, field, ':');) fields.push_back(field);
    if (fields.size() >= 4 && fields[index] == value) return fields;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<v1::ImageConfig> LoadImageConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return v1::ImageConfig();
    return base::ErrnoError("open", path);
  }
  std::string bytes(kMaxImageConfigBytes + 1, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(in.gcount()));
  if (bytes.size() > kMaxImageConfigBytes) {
    return absl::FailedPreconditionError("image config " + path + " is over " +
                                         std::to_string(kMaxImageConfigBytes) + " bytes");
  }
  v1::ImageConfig config;
  if (!config.ParseFromString(bytes)) {
    return absl::FailedPreconditionError("image config " + path + " is not an ImageConfig");
  }
  return config;
}

absl::StatusOr<UserIds> ResolveUser(const std::string& user, const std::string& etc_dir) {
  if (user.empty()) return UserIds{};
  std::size_t colon = user.find(':');
  std::string name = user.substr(0, colon);
  std::optional<std::string> group;
  if (colon != std::string::npos) group = user.substr(colon + 1);
  UserIds ids;
  if (std::optional<std::uint32_t> numeric = ParseId(name)) {
    ids.uid = *numeric;
    // A numeric user's primary group comes from passwd when it is listed there, else 0.
    if (auto entry = FindEntry(etc_dir + "/passwd", 2, std::to_string(*numeric))) {
      ids.gid = ParseId((*entry)[3]).value_or(0);
    }
  } else {
    std::optional<std::vector<std::string>> entry = FindEntry(etc_dir + "/passwd", 0, name);
    std::optional<std::uint32_t> uid = entry ? ParseId((*entry)[2]) : std::nullopt;
    std::optional<std::uint32_t> gid = entry ? ParseId((*entry)[3]) : std::nullopt;
    if (!uid || !gid) {
      return absl::NotFoundError("image user \"" + name + "\" is not in " + etc_dir + "/passwd");
    }
    ids = {*uid, *gid};
  }
  if (group) {
    if (std::optional<std::uint32_t> gid = ParseId(*group)) {
      ids.gid = *gid;
    } else {
      std::optional<std::vector<std::string>> entry = FindEntry(etc_dir + "/group", 0, *group);
      std::optional<std::uint32_t> named = entry ? ParseId((*entry)[2]) : std::nullopt;
      if (!named) {
        return absl::NotFoundError("image group \"" + *group + "\" is not in " + etc_dir +
                                   "/group");
      }
      ids.gid = *named;
    }
  }
  return ids;
}

absl::StatusOr<SpawnSpec> SpecFromImage(const v1::ImageConfig& config) {
  SpawnSpec spec;
  spec.argv.assign(config.entrypoint().begin(), config.entrypoint().end());
  spec.argv.insert(spec.argv.end(), config.cmd().begin(), config.cmd().end());
  if (spec.argv.empty()) {
    return absl::FailedPreconditionError(
        "the image names no entrypoint or cmd to run, and the request no argv");
  }
  spec.env.assign(config.env().begin(), config.env().end());
  spec.cwd = config.working_dir();
  EMBER_ASSIGN_OR_RETURN(UserIds ids, ResolveUser(config.user()));
  spec.uid = ids.uid;
  spec.gid = ids.gid;
  return spec;
}

}  // namespace ember::agent

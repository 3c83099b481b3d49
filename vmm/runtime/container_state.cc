#include "container_state.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "vmm/base/atomic_file.h"
#include "vmm/base/status.h"

namespace ember::runtime {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxIdBytes = 1024;
constexpr const char* kOciVersion = "1.0.2";

}  // namespace

const char* StatusName(ContainerStatus status) {
  switch (status) {
    case ContainerStatus::kCreating:
      return "creating";
    case ContainerStatus::kCreated:
      return "created";
    case ContainerStatus::kRunning:
      return "running";
    case ContainerStatus::kPaused:
      return "paused";
    case ContainerStatus::kStopped:
      return "stopped";
  }
  return "unknown";
}

absl::Status ValidateId(const std::string& id) {
  bool valid = !id.empty() && id.size() <= kMaxIdBytes && id != "." && id != "..";
  for (char c : id) {
    valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '+' ||
                      c == '-' || c == '.');
  }
  if (!valid) return absl::InvalidArgumentError("invalid container id format: " + id);
  return absl::OkStatus();
}

std::string StateRoot::RecordPath(const std::string& id) const {
  return ContainerDir(id) + "/state.json";
}
std::string StateRoot::SupervisorSocket(const std::string& id) const {
  return ContainerDir(id) + "/s.sock";
}
std::string StateRoot::VsockPath(const std::string& id) const {
  return ContainerDir(id) + "/v.sock";
}
std::string StateRoot::VmmLogPath(const std::string& id) const {
  return ContainerDir(id) + "/vmm.log";
}

absl::Status StateRoot::CreateContainerDir(const std::string& id) const {
  EMBER_RETURN_IF_ERROR(ValidateId(id));
  std::error_code ec;
  std::filesystem::create_directories(root_, ec);
  if (ec)
    return absl::InternalError("cannot make the state directory " + root_ + ": " + ec.message());
  ::chmod(root_.c_str(), 0700);
  if (::mkdir(ContainerDir(id).c_str(), 0700) != 0) {
    if (errno == EEXIST) {
      return absl::AlreadyExistsError("container with id \"" + id + "\" already exists");
    }
    return base::ErrnoError("mkdir", ContainerDir(id));
  }
  return absl::OkStatus();
}

absl::StatusOr<ContainerRecord> StateRoot::Load(const std::string& id) const {
  EMBER_RETURN_IF_ERROR(ValidateId(id));
  std::ifstream in(RecordPath(id));
  if (!in) return absl::NotFoundError("container \"" + id + "\" does not exist");
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ContainerRecord> record = RecordFromJson(text.str());
  if (!record.ok()) {
    return absl::DataLossError(RecordPath(id) + ": " + std::string(record.status().message()));
  }
  return record;
}

absl::Status StateRoot::Save(const ContainerRecord& record) const {
  return base::WriteFileAtomically(RecordPath(record.id), RecordToJson(record), 0600);
}

absl::Status StateRoot::Remove(const std::string& id) const {
  EMBER_RETURN_IF_ERROR(ValidateId(id));
  std::error_code ec;
  std::filesystem::remove_all(ContainerDir(id), ec);
  if (ec) return absl::InternalError("cannot remove " + ContainerDir(id) + ": " + ec.message());
  return absl::OkStatus();
}

std::vector<std::string> StateRoot::List() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root_, ec)) {
    std::string name = entry.path().filename();
    if (ValidateId(name).ok() && std::filesystem::exists(RecordPath(name))) ids.push_back(name);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string RecordToJson(const ContainerRecord& record) {
  json j = {
      {"id", record.id},
      {"bundle", record.bundle},
      {"rootfs", record.rootfs},
      {"created", record.created},
      {"pid", record.pid},
      {"pid_start", record.pid_start},
      {"annotations", record.annotations},
      {"image_lease", record.image_lease},
      {"netns_path", record.netns_path},
      {"tap_name", record.tap_name},
      {"jail_dir", record.jail_dir},
      {"jail_uid_lease", record.jail_uid_lease},
      {"jail_uid", record.jail_uid},
      {"cgroup_dirs", record.cgroup_dirs},
  };
  return j.dump(2) + "\n";
}

absl::StatusOr<ContainerRecord> RecordFromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  ContainerRecord record;
  try {
    record.id = j.at("id").get<std::string>();
    record.bundle = j.at("bundle").get<std::string>();
    record.rootfs = j.value("rootfs", "");
    record.created = j.value("created", "");
    record.pid = j.at("pid").get<pid_t>();
    record.pid_start = j.at("pid_start").get<std::uint64_t>();
    record.annotations = j.value("annotations", std::map<std::string, std::string>{});
    record.image_lease = j.value("image_lease", "");
    record.netns_path = j.value("netns_path", "");
    record.tap_name = j.value("tap_name", "");
    record.jail_dir = j.value("jail_dir", "");
    record.jail_uid_lease = j.value("jail_uid_lease", "");
    record.jail_uid = j.value("jail_uid", std::uint32_t{0});
    record.cgroup_dirs = j.value("cgroup_dirs", std::vector<std::string>{});
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(std::string("bad container record: ") + e.what());
  }
  return record;
}

std::string OciStateJson(const ContainerRecord& record, ContainerStatus status) {
  json j = {
      {"ociVersion", kOciVersion},    {"id", record.id},
      {"status", StatusName(status)}, {"pid", status == ContainerStatus::kStopped ? 0 : record.pid},
      {"bundle", record.bundle},      {"rootfs", record.rootfs},
      {"created", record.created},    {"owner", ""},
  };
  if (!record.annotations.empty()) j["annotations"] = record.annotations;
  return j.dump(2) + "\n";
}

std::optional<std::uint64_t> ProcessStartTime(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
  std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // Field 3 (state) is the first after ')'; field 22 is the 20th.
  std::string state;
  fields >> state;
  if (state == "Z" || state == "X") return std::nullopt;  // exited, not yet reaped
  for (int i = 4; i <= 22; ++i) {
    if (!(fields >> field)) return std::nullopt;
  }
  try {
    return std::stoull(field);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

bool SupervisorAlive(const ContainerRecord& record) {
  std::optional<std::uint64_t> start = ProcessStartTime(record.pid);
  return start.has_value() && *start == record.pid_start;
}

}  // namespace ember::runtime

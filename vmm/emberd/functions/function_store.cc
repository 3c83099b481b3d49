#include "vmm/emberd/functions/function_store.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

#include "vmm/base/logging.h"
#include "vmm/base/status.h"
#include "vmm/emberd/store.h"

namespace ember::emberd::functions {
namespace {
constexpr char kRecord[] = "/function.json";
}  // namespace

absl::StatusOr<FunctionStore> FunctionStore::Open(const std::string& state_dir) {
  const std::string root = state_dir + "/fn";
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError("mkdir", root);
  return FunctionStore(root);
}

absl::Status FunctionStore::Claim(const std::string& name) const {
  const std::string dir = Dir(name);
  if (::mkdir(dir.c_str(), 0700) == 0) return absl::OkStatus();
  if (errno == EEXIST) {
    return absl::AlreadyExistsError("name: a function \"" + name + "\" already exists");
  }
  return base::ErrnoError("mkdir", dir);
}

absl::Status FunctionStore::Save(const v1::Function& function) const {
  v1::Function record = function;
  record.clear_counters();
  record.clear_paused_clones();
  record.clear_warm_clones();
  record.clear_busy_clones();
  return WriteMessageJson(Dir(function.name()) + kRecord, record);
}

std::vector<v1::Function> FunctionStore::LoadAll() const {
  std::vector<v1::Function> functions;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator(root_, error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    v1::Function function;
    const std::string path = it->path().string() + kRecord;
    if (auto status = ReadMessageJson(path, &function); !status.ok()) {
      // A deploy killed before its first record: only its directory is left.
      EMBER_LOG(kWarn) << "emberd: function directory " << it->path().string()
                       << " has no record (" << status.message() << "); removing it";
      (void)RemoveTree(it->path().string());
      continue;
    }
    if (function.name() != it->path().filename().string()) {
      EMBER_LOG(kWarn) << "emberd: skipping " << path << ": it names function \""
                       << function.name() << "\"";
      continue;
    }
    functions.push_back(std::move(function));
  }
  if (error) {
    EMBER_LOG(kWarn) << "emberd: cannot list " << root_ << ": " << error.message();
  }
  return functions;
}

absl::Status FunctionStore::Remove(const std::string& name) const { return RemoveTree(Dir(name)); }

}  // namespace ember::emberd::functions

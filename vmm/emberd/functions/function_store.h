#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/api.pb.h"

namespace ember::emberd::functions {

// The functions' records on disk: <state_dir>/fn/<name>/function.json (a Function without its
// live counters), beside the sockets of the function's VMs. Written atomically, so a killed
// emberd leaves the old record or the new one. Any thread (one writer per function).
class FunctionStore {
 public:
  // Makes <state_dir>/fn if missing.
  [[nodiscard]] static absl::StatusOr<FunctionStore> Open(const std::string& state_dir);

  [[nodiscard]] std::string Dir(const std::string& name) const { return root_ + "/" + name; }
  // Makes the function's directory: ALREADY_EXISTS when a record or a deploy holds it.
  [[nodiscard]] absl::Status Claim(const std::string& name) const;
  [[nodiscard]] absl::Status Save(const v1::Function& function) const;
  // Every record that reads; one that does not is logged and skipped.
  [[nodiscard]] std::vector<v1::Function> LoadAll() const;
  // The record and everything in the function's directory.
  [[nodiscard]] absl::Status Remove(const std::string& name) const;

 private:
  explicit FunctionStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace ember::emberd::functions

#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ember/v1/vm_config.pb.h"
#include "snapshot/memory_file.h"
#include "vmm/base/path_rules.h"
#include "vmm/vmm.h"

namespace ember::vmm {

// Checks that `state` describes what a VM built from `config` has: its RAM ranges (none in
// the MMIO gap), laid back to back in a memory file of the recorded size, and one vCPU for
// each id below its vcpu_count. InvalidArgument saying what differs otherwise.
[[nodiscard]] absl::Status CheckStateMatchesConfig(const v1::SnapshotState& state,
                                                   const v1::VmConfig& config);

// What a restore reads besides its state file: the memory file to map (empty: an external
// page-fault handler serves the memory), the name its later diffs give it (empty: the same),
// and the files handed over for the bases a DIFF state file names (snapshot::HandedFiles).
struct RestoreMemory {
  std::string path;
  std::string name{};
  snapshot::HandedFiles bases{};
};

// The memory files a restore from `source` reads, in the order it lays them down
// (snapshot::MemoryChain with the handed-over files).
[[nodiscard]] std::vector<snapshot::MemoryFileRef> RestoreChain(const RestoreSource& source);

// Prepares a restore: reads and verifies the state file, checks the memory file is the
// size the state expects, applies `overrides` to the saved configuration by the rules
// (rules::ApplyRestoreOverrides: the state file's log and metrics paths are dropped), which
// becomes options.config, and checks the state matches that (CheckStateMatchesConfig).
// A state file does not choose host files (CheckPathsFromStateFile): every drive and vsock
// path it names that `overrides` leave in place must pass `allowed` (ember-vmm --allow-dir),
// and so must its base memory files (CheckBaseMemoryFiles), before any is opened, unless
// they were handed over (memory.bases: then every base must be among them).
// Touches nothing; every problem is InvalidArgument naming the file or the override.
[[nodiscard]] absl::Status PrepareRestore(const std::string& state_path,
                                          const RestoreMemory& memory,
                                          const v1::RestoreOverrides& overrides,
                                          const base::PathRules& allowed, VmmOptions* options);

// OK when every drive and vsock path of `config` (a state file's, `overrides` applied) is
// either an override's or passes `allowed`; otherwise InvalidArgument naming the device, the
// path and both ways out. With no allowed directory, every path the state file chose is
// refused: a crafted (re-CRC'd) state file would otherwise have a root ember-vmm open any
// host file read-write as a disk, or bind a socket anywhere.
[[nodiscard]] absl::Status CheckPathsFromStateFile(const v1::VmConfig& config,
                                                   const v1::RestoreOverrides& overrides,
                                                   const base::PathRules& allowed);

// OK when every base memory file a DIFF state file (at `state_path`) names was handed over
// (`handed`, when not empty: the restorer opened them, and no name from the file is opened);
// with none handed, when each passes `allowed`, or with no allowed directory lies in the state
// file's own directory (where a jailed ember-vmm finds the bases emberd links in beside its
// state file). Otherwise InvalidArgument naming the path. A crafted state file would
// otherwise have ember-vmm map any host file.
[[nodiscard]] absl::Status CheckBaseMemoryFiles(const v1::SnapshotState& state,
                                                const std::string& state_path,
                                                const base::PathRules& allowed,
                                                const snapshot::HandedFiles& handed = {});

// Reads a binary ember.v1.RestoreOverrides message from `path` (ember-vmm
// --restore-overrides: what emberd writes for a clone). InvalidArgument naming the file.
[[nodiscard]] absl::StatusOr<v1::RestoreOverrides> LoadRestoreOverrides(const std::string& path);

}  // namespace ember::vmm

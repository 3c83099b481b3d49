// ember-snapshot: offline tools for snapshot files.
//   ember-snapshot merge --state DIFF_STATE --mem DIFF_MEM --out-state STATE --out-mem MEM
// folds a diff snapshot and the chain beneath it (its base memory files) into one full
// snapshot, which restores without the chain. The outputs are new files: naming an input as
// an output is refused, since the inputs stay in use (other diffs, clones).
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "snapshot/memory_file.h"
#include "snapshot/snapshot_id.h"
#include "snapshot/state_file.h"

namespace {

constexpr char kUsage[] =
    "usage: ember-snapshot merge --state DIFF_STATE --mem DIFF_MEM --out-state STATE "
    "--out-mem MEM\n";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ember-snapshot: error: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 2 || std::string_view(argv[1]) != "merge") {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string state_path, mem_path, out_state, out_mem;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (i + 1 >= argc) return Fail(2, std::string(arg) + " needs a value");
    std::string value = argv[++i];
    if (arg == "--state") state_path = value;
    else if (arg == "--mem") mem_path = value;
    else if (arg == "--out-state") out_state = value;
    else if (arg == "--out-mem") out_mem = value;
    else return Fail(2, "unknown flag \"" + std::string(arg) + "\"");
  }
  if (state_path.empty() || mem_path.empty() || out_state.empty() || out_mem.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto state = ember::snapshot::ReadStateFile(state_path);
  if (!state.ok()) return Fail(2, std::string(state.status().message()));
  std::vector<ember::snapshot::MemoryFileRef> chain =
      ember::snapshot::MemoryChain(*state, mem_path);
  for (const ember::snapshot::MemoryFileRef& file : chain) {
    if (auto status = ember::snapshot::CheckMemoryFile(file, state->memory_file_size());
        !status.ok()) {
      return Fail(2, std::string(status.message()));
    }
  }
  // Checked before anything is written: a refused merge leaves every file as it was.
  std::vector<std::string> inputs;
  for (const ember::snapshot::MemoryFileRef& file : chain) inputs.push_back(file.path);
  inputs.push_back(state_path);
  if (auto status = ember::snapshot::CheckOutputIsNoInput(out_mem, inputs); !status.ok()) {
    return Fail(2, "--out-mem: " + std::string(status.message()));
  }
  inputs.push_back(out_mem);
  if (auto status = ember::snapshot::CheckOutputIsNoInput(out_state, inputs); !status.ok()) {
    return Fail(2, "--out-state: " + std::string(status.message()));
  }
  // A new snapshot, with an id of its own: the diff's memory file must not pass for it.
  std::string id = ember::snapshot::NewSnapshotId();
  if (auto status =
          ember::snapshot::MergeMemoryFiles(chain, state->memory_file_size(), out_mem, id);
      !status.ok()) {
    return Fail(1, std::string(status.message()));
  }
  state->set_kind(ember::v1::SnapshotState::FULL);
  state->clear_base_memory_files();
  state->clear_base_memory_ids();
  state->set_snapshot_id(id);
  if (auto status = ember::snapshot::WriteStateFile(out_state, *state); !status.ok()) {
    // A memory file without its state file restores nothing; it was new, so it goes.
    ::unlink(out_mem.c_str());
    return Fail(1, std::string(status.message()));
  }
  std::printf("merged %zu memory files into %s\n", chain.size(), out_mem.c_str());
  return 0;
}

// Vmm's userfaultfd restore path: guest memory served by snapshot::UffdPageServer, and the
// working set it records or prefetches (the rest of the restore is in vmm_snapshot.cc).
#include "snapshot/uffd_page_server.h"
#include "snapshot/working_set.h"
#include "vmm/base/logging.h"
#include "vmm/base/metrics.h"
#include "vmm/base/status.h"
#include "vmm/seccomp.h"
#include "vmm/vmm.h"

namespace ember::vmm {

absl::StatusOr<base::GuestMemory> Vmm::ServeSnapshotMemory(
    const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges) {
  if (source.state.kind() != v1::SnapshotState::FULL) {
    return absl::InvalidArgumentError(
        "--restore-mem-backend uffd restores full snapshots only; restore a diff with the file "
        "backend, or merge its chain into a full snapshot first");
  }
  EMBER_ASSIGN_OR_RETURN(base::GuestMemory memory, base::GuestMemory::CreateAnonymous(ranges));
  // The encoded state is unique to this snapshot (vCPU registers, clock): a working set
  // recorded on another snapshot of the same guest does not match it.
  EMBER_ASSIGN_OR_RETURN(
      page_server_,
      snapshot::UffdPageServer::Create(memory, {source.memory_path, source.state.snapshot_id()},
                                       source.state.SerializeAsString()));
  std::string ws_path =
      source.working_set_path.empty() ? source.memory_path + ".ws" : source.working_set_path;
  if (source.prefetch_working_set) {
    EMBER_ASSIGN_OR_RETURN(snapshot::WorkingSet set,
                           snapshot::ReadWorkingSetFile(ws_path, page_server_->memory_size(),
                                                        page_server_->fingerprint()));
    // Before anything can touch the memory: the vCPUs find these pages in place.
    EMBER_RETURN_IF_ERROR(page_server_->Prefetch(set));
  } else {
    working_set_path_ = ws_path;  // the first restore records the set
  }
  // Serving starts now: restoring device state may read guest memory.
  EMBER_RETURN_IF_ERROR(page_server_->Start(
      [] { return InstallThreadSeccomp(jailer::VmmThreadKind::kPageServer); }));
  return memory;
}

void Vmm::SaveWorkingSet() {
  if (page_server_ == nullptr || working_set_path_.empty()) return;
  // The server keeps running: device teardown may still touch guest memory.
  snapshot::WorkingSet set = page_server_->Recorded();
  if (auto status = snapshot::WriteWorkingSetFile(working_set_path_, set); !status.ok()) {
    EMBER_LOG(kWarn) << "cannot write the working set: " << status.message();
    return;
  }
  base::MetricsRegistry::Global().Get("uffd", "working_set_pages")->Set(set.page_count());
  EMBER_LOG(kInfo) << "working set of " << set.page_count() << " pages in " << set.runs.size()
                   << " runs written to " << working_set_path_;
}

}  // namespace ember::vmm

// Vmm's userfaultfd restore paths: guest memory served by snapshot::UffdPageServer (and the
// working set it records or prefetches), or handed to an external page-fault handler
// (UffdHandoff). The rest of the restore is in vmm_snapshot.cc.
#include <fcntl.h>
#include <sys/epoll.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "snapshot/uffd_page_server.h"
#include "snapshot/working_set.h"
#include "vmm/base/logging.h"
#include "vmm/base/metrics.h"
#include "vmm/base/status.h"
#include "vmm/restore.h"
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
  const snapshot::MemoryFileRef file = RestoreChain(source).back();  // a full one has no bases
  EMBER_ASSIGN_OR_RETURN(
      page_server_,
      snapshot::UffdPageServer::Create(memory, file, source.state.SerializeAsString()));
  std::string ws_path =
      source.working_set_path.empty() ? file.path + ".ws" : source.working_set_path;
  if (source.prefetch_working_set) {
    EMBER_ASSIGN_OR_RETURN(snapshot::WorkingSet set,
                           snapshot::ReadWorkingSetFile(ws_path, page_server_->memory_size(),
                                                        page_server_->fingerprint()));
    // Before anything can touch the memory: the vCPUs find these pages in place.
    EMBER_RETURN_IF_ERROR(page_server_->Prefetch(set));
  } else {
    // The first restore records the set, in the directory as it is now.
    const std::string dir = std::filesystem::path(ws_path).parent_path().string();
    working_set_dir_.Reset(
        ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (working_set_dir_) {
      working_set_path_ = ws_path;
    } else {
      EMBER_LOG(kWarn) << "the working set will not be recorded: cannot open " << dir << ": "
                       << std::strerror(errno);
    }
  }
  // Serving starts now: restoring device state may read guest memory.
  EMBER_RETURN_IF_ERROR(page_server_->Start(
      [] { return InstallThreadSeccomp(jailer::VmmThreadKind::kPageServer); }));
  return memory;
}

absl::StatusOr<base::GuestMemory> Vmm::HandOffSnapshotMemory(
    const RestoreSource& source, const std::vector<base::GuestMemory::Range>& ranges) {
  if (source.state.kind() != v1::SnapshotState::FULL) {
    return absl::InvalidArgumentError(
        "an external page-fault handler serves full snapshots only: merge the diff's chain "
        "into a full snapshot (ember-snapshot merge) and give the handler its memory file");
  }
  EMBER_ASSIGN_OR_RETURN(base::GuestMemory memory, base::GuestMemory::CreateAnonymous(ranges));
  EMBER_ASSIGN_OR_RETURN(uffd_handoff_,
                         UffdHandoff::Create(memory, source.uffd_handler_socket));
  EMBER_LOG(kInfo) << "guest memory is served by the page-fault handler (pid "
                   << uffd_handoff_->handler_pid() << ") at " << source.uffd_handler_socket;
  return memory;
}

absl::Status Vmm::WatchUffdHandler() {
  if (uffd_handoff_ == nullptr) return absl::OkStatus();
  // Once the handler is gone no fault can be served again: a vCPU touching a page it never
  // copied would wait forever. End the VM instead, saying why.
  const UffdHandoff::ExitWatch watch = uffd_handoff_->exit_watch();
  return loop_->Add(watch.fd, watch.events, [this, watch](std::uint32_t) {
    loop_->Remove(watch.fd);
    uffd_handler_exited_ = true;
    base::MetricsRegistry::Global().Get("uffd", "handler_exits")->Add();
    Finish({kExitError, "the page-fault handler (pid " +
                            std::to_string(uffd_handoff_->handler_pid()) + ") at " +
                            uffd_handoff_->socket_path() +
                            " exited: guest memory can no longer be served"});
  });
}

void Vmm::SaveWorkingSet() {
  if (page_server_ == nullptr || working_set_path_.empty()) return;
  // The server keeps running: device teardown may still touch guest memory.
  snapshot::WorkingSet set = page_server_->Recorded();
  if (auto status = snapshot::WriteWorkingSetFile(working_set_path_, set, working_set_dir_.Get());
      !status.ok()) {
    EMBER_LOG(kWarn) << "cannot write the working set: " << status.message();
    return;
  }
  base::MetricsRegistry::Global().Get("uffd", "working_set_pages")->Set(set.page_count());
  EMBER_LOG(kInfo) << "working set of " << set.page_count() << " pages in " << set.runs.size()
                   << " runs written to " << working_set_path_;
}

}  // namespace ember::vmm

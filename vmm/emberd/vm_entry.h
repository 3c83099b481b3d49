#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "ember/v1/api.pb.h"
#include "vmm/emberd/event_hub.h"
#include "vmm/emberd/supervisor.h"

namespace ember::emberd {

// Wall-clock milliseconds since the epoch: records' and events' times.
[[nodiscard]] std::int64_t NowUnixMs();
[[nodiscard]] const std::string& StateName(v1::Vm::State state);

// One VM emberd keeps: its record (vm.json in its directory) and the events it publishes,
// and (SupervisedVmm) its ember-vmm's connection and process, all under `mu`. `op_mu`
// serialises the API calls on one VM (Start vs Stop vs Delete) without blocking the
// supervisor. A snapshot or a restore holds `op_mu` for as long as its VMM works, so Stop waits
// for it only so long (a timed mutex). Owned by VmManager; the supervisor holds it while it
// watches the VMM.
class VmEntry final : public SupervisedVmm {
 public:
  // `dir`: the VM's state directory; `events` outlives the entry.
  VmEntry(v1::Vm record, std::string dir, EventHub& events)
      : SupervisedVmm(record.vm_id()), vm(std::move(record)), dir_(std::move(dir)),
        events_(events) {}

  std::timed_mutex op_mu;
  v1::Vm vm;              // guarded by mu
  bool creating = false;  // guarded by mu: Create has not returned yet; no events
  bool deleted = false;   // guarded by mu: no more records
  // guarded by mu: deleted, but its files could not all be removed; only a retried Delete
  // finds it (its id stays taken meanwhile).
  bool delete_unfinished = false;
  // The snapshot the VM's next DIFF snapshot applies onto (its latest, or the one it was
  // restored from); empty when emberd knows of none.
  std::string last_snapshot_id;  // guarded by mu

  // All with `mu` held.
  void ApplyVmmState(v1::VmmStatus::State state);
  // Records and announces a new state; STOPPED is final.
  void SetState(v1::Vm::State state);
  // Writes vm.json; a failure (the state directory's disk full) is logged, and returned for
  // the callers that must not go on without the record (Create's launch).
  absl::Status Persist();
  void Publish(v1::Event event);

 protected:
  void OnHello(const v1::VmmStatus& status) override;
  void OnState(v1::VmmStatus::State state) override { ApplyVmmState(state); }
  void OnBooted(std::uint64_t boot_time_us) override;
  void OnExit(const v1::ExitInfo& exit) override;

 private:
  const std::string dir_;
  EventHub& events_;
};

}  // namespace ember::emberd

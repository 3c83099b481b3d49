#include "vmm/emberd/vm_entry.h"

#include <chrono>

#include "vmm/base/logging.h"
#include "vmm/emberd/store.h"

namespace ember::emberd {

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const std::string& StateName(v1::Vm::State state) { return v1::Vm::State_Name(state); }

void VmEntry::ApplyVmmState(v1::VmmStatus::State state) {
  switch (state) {
    case v1::VmmStatus::CREATED: SetState(v1::Vm::CREATED); break;
    case v1::VmmStatus::RUNNING: SetState(v1::Vm::RUNNING); break;
    case v1::VmmStatus::PAUSED: SetState(v1::Vm::PAUSED); break;
    default: break;  // ENDED: the process exit makes it STOPPED
  }
}

void VmEntry::SetState(v1::Vm::State state) {
  // STOPPED is final: a response that raced with the process exit must not revive the VM.
  if (vm.state() == state || vm.state() == v1::Vm::STOPPED) return;
  EMBER_LOG(kInfo) << "emberd: VM " << vm.vm_id() << ": " << StateName(vm.state()) << " -> "
                   << StateName(state);
  vm.set_state(state);
  (void)Persist();
  v1::Event event;
  event.set_kind(v1::Event::STATE);
  event.set_state(state);
  Publish(event);
}

absl::Status VmEntry::Persist() {
  if (deleted) return absl::OkStatus();
  absl::Status status = WriteMessageJson(dir_ + "/vm.json", vm);
  if (!status.ok()) {
    EMBER_LOG(kError) << "emberd: cannot record VM " << vm.vm_id() << ": " << status.message();
  }
  return status;
}

void VmEntry::Publish(v1::Event event) {
  if (creating) return;  // nobody knows this VM until Create returns
  event.set_vm_id(vm.vm_id());
  event.set_unix_ms(NowUnixMs());
  events_.Publish(event);
}

void VmEntry::OnHello(const v1::VmmStatus& status) {
  // The pid emberd launched (or recorded) wins: HELLO's is the VMM's own view, which in a
  // jail's pid namespace is 1, and the process emberd supervises is the jailer's stand-in.
  if (vm.pid() == 0) vm.set_pid(status.pid());
  if (status.boot_time_us() != 0) vm.set_boot_time_us(status.boot_time_us());
  ApplyVmmState(status.state());
}

void VmEntry::OnBooted(std::uint64_t boot_time_us) {
  vm.set_boot_time_us(boot_time_us);
  (void)Persist();
  v1::Event event;
  event.set_kind(v1::Event::BOOTED);
  event.set_boot_time_us(boot_time_us);
  Publish(event);
}

void VmEntry::OnExit(const v1::ExitInfo& exit) {
  *vm.mutable_exit() = exit;
  vm.set_pid(0);
  v1::Event event;
  event.set_kind(v1::Event::EXITED);
  *event.mutable_exit() = exit;
  Publish(event);
  SetState(v1::Vm::STOPPED);
  (void)Persist();
}

}  // namespace ember::emberd

#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/path_rules.h"
#include "vmm/base/unique_fd.h"
#include "vmm/emberd/clone_network/network_server.h"
#include "vmm/emberd/flags.h"
#include "vmm/emberd/functions/rootfs_builder.h"
#include "vmm/emberd/launcher.h"
#include "vmm/emberd/vm_manager.h"

// What emberd sets up on its host from its flags before it serves (main.cc's steps, called
// from its main thread only). A failure ends emberd through Fail (flags.h).
namespace ember::emberd {

// The ember-vmm beside emberd's own binary (--vmm's default), or "ember-vmm" if unknown.
std::string DefaultVmmPath();

// Takes the state directory's lock, an flock on <state_dir>/emberd.lock, held for as long as
// the returned fd (close-on-exec: no ember-vmm inherits it) is open. Exits when another emberd
// holds it, naming that emberd's pid.
base::UniqueFd LockStateDir(const std::string& state_dir);

// The allowed directories (--allow-dir, or the default when it exists), opened before the
// seccomp filter. An operator's directory that cannot be opened stops emberd.
base::PathRules OpenPathRules(std::vector<std::string> dirs);

// The clone networks of functions with network on, or null without root (a function asking
// for one is then refused). Called while emberd has one thread, after it holds the state
// directory's lock: the server empties `netns_dir` of what an earlier emberd left.
std::unique_ptr<CloneNetworkServer> StartCloneNetworks(const Flags& flags,
                                                       const std::string& netns_dir);

// The builder of functions' images from OCI archives: ember-rootfs beside emberd, or null
// (deploys from an archive are then refused) when there is none.
std::unique_ptr<functions::RootfsBuilder> StartRootfsBuilder(const Flags& flags);

// The log level, and the signals: SIGPIPE ignored, SIGTERM/SIGINT blocked in every thread.
void ConfigureProcess(const Flags& flags);

// The jail every ember-vmm runs in unless --no-jail, filling in `options`' jail fields; `vmm`
// becomes absolute, as the jailer's --exec-file.
std::optional<JailerConfig> JailFromFlags(const Flags& flags, std::string* vmm,
                                          ManagerOptions* options);

}  // namespace ember::emberd

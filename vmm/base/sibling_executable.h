#pragma once

#include <string>

namespace ember::base {

// The path of the program `name` beside the running executable, whatever name the executable
// was run by (a `firecracker` symlink to ember-vmm finds ember-vmm's directory). How ember-vmm
// finds ember-config and ember-fc-api, which the jailer links into the jail with it. Any
// thread; allocates.
[[nodiscard]] std::string SiblingExecutable(const std::string& name);

}  // namespace ember::base

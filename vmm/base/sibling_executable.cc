#include "vmm/base/sibling_executable.h"

#include <limits.h>
#include <sys/auxv.h>
#include <unistd.h>

namespace ember::base {

std::string SiblingExecutable(const std::string& name) {
  // /proc/self/exe resolves symlinks; a jail has no /proc, but the kernel keeps the path the
  // program was executed by (AT_EXECFN) for every process.
  char self[PATH_MAX];
  ssize_t length = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string exe;
  if (length > 0) {
    exe.assign(self, static_cast<std::size_t>(length));
  } else if (const auto* execfn = reinterpret_cast<const char*>(::getauxval(AT_EXECFN))) {
    // getauxval returns the string's address as an integer.
    exe = execfn;
  }
  std::size_t slash = exe.rfind('/');
  return (slash == std::string::npos ? std::string() : exe.substr(0, slash + 1)) + name;
}

}  // namespace ember::base

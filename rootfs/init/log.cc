#include "rootfs/init/log.h"

#include <unistd.h>

#include <string>

namespace ember::init {

void Log(std::string_view message) {
  std::string line = "ember-init: ";
  line += message;
  line += '\n';
  // Nothing to do if the console is gone; init must not stop over it.
  [[maybe_unused]] ssize_t written = write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace ember::init

#pragma once

// A working directory as a Firecracker user has one: the config file from
// tests/data/firecracker/ and the files it names relatively (vmlinux.bin, here the test guest;
// rootfs.ext4 and scratch.img, small blank images), with ember-vmm run from inside it.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/process.h"

namespace ember::testing {

class FirecrackerDir {
 public:
  explicit FirecrackerDir(const std::string& config_name) : dir_("ember-fc-config") {
    namespace fs = std::filesystem;
    fs::copy_file(std::string(EMBER_SOURCE_DIR) + "/tests/data/firecracker/" + config_name,
                  Path(config_name));
    fs::copy_file(BinPath("ember-testguest"), Path("vmlinux.bin"));
    for (const char* image : {"rootfs.ext4", "scratch.img"}) {
      std::ofstream(Path(image), std::ios::binary) << std::string(1 << 20, '\0');
    }
    config_ = config_name;
  }

  [[nodiscard]] std::string Path(const std::string& name) const {
    return dir_.path() + "/" + name;
  }

  // Runs `ember-vmm --config <the config>` with this directory as its working directory.
  [[nodiscard]] ProcessResult RunVmm() const {
    return RunProcess({"/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", dir_.path(),
                       BinPath("ember-vmm"), "--config", config_},
                      std::chrono::seconds(60));
  }

 private:
  ScopedTempDir dir_;
  std::string config_;
};

}  // namespace ember::testing

#include "tests/support/debian_kernel.h"

#include <cstdlib>
#include <filesystem>

#include "tests/support/process.h"

namespace ember::testing {

namespace fs = std::filesystem;

// tests/setup.sh downloads the package here; EMBER_LINUX_DEB overrides.
std::string FindKernelPackage() {
  if (const char* deb = std::getenv("EMBER_LINUX_DEB")) return deb;
  const fs::path dir = "/var/cache/ember/debian-kernel";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename();
    if (name.starts_with("linux-image-") && name.find("cloud-amd64") != std::string::npos &&
        name.ends_with(".deb")) {
      return entry.path();
    }
  }
  return "";
}

// Unpacks /boot/vmlinuz-* from the package into a fresh directory; returns its path.
std::string ExtractVmlinuz(const std::string& deb) {
  std::string dir = fs::path(WriteTempFile("unused", "")).parent_path();
  std::string command = "dpkg-deb --fsys-tarfile '" + deb + "' | tar -x -C '" + dir + "' ./boot/";
  if (std::system(command.c_str()) != 0) return "";
  for (const auto& entry : fs::directory_iterator(dir + "/boot")) {
    if (entry.path().filename().string().starts_with("vmlinuz-")) return entry.path();
  }
  return "";
}

}  // namespace ember::testing

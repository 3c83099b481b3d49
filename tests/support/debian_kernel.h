#pragma once

#include <string>

// Debian's cloud kernel, which tests/setup.sh downloads, for the Linux boot proofs.
namespace ember::testing {

inline constexpr char kDebianKernelBootArgs[] =
    "earlyprintk=ttyS0 console=ttyS0 reboot=k panic=1 pci=off";

// The package in /var/cache/ember/debian-kernel (or $EMBER_LINUX_DEB); empty when absent.
std::string FindKernelPackage();
// Unpacks /boot/vmlinuz-* from `deb` into a fresh directory; returns its path or "".
std::string ExtractVmlinuz(const std::string& deb);

}  // namespace ember::testing

#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

// Skips the current test, saying why, when this host cannot run VMs.
#define EMBER_REQUIRE_KVM()                                                           \
  do {                                                                                \
    if (::access("/dev/kvm", R_OK | W_OK) != 0) {                                     \
      GTEST_SKIP() << "needs /dev/kvm, which is not usable here: " << std::strerror(errno); \
    }                                                                                 \
  } while (false)

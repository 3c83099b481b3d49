#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "jailer/seccomp_filter.h"
#include "vmm/emberd/tls_credentials.h"

namespace ember::emberd {

// emberd's command line (--help lists the flags and their defaults).
struct Flags {
  std::string socket = "/run/ember/emberd.sock";
  std::string state_dir = "/var/lib/ember";
  std::string tcp;
  TlsFiles tls;
  std::string socket_group;
  std::vector<std::string> allow_dirs;  // empty: kDefaultAllowDir
  std::string vmm;
  std::size_t max_vms = 1024;
  std::uint32_t fn_max_in_flight = 64;
  std::uint32_t fn_max_archive_mib = 4096;  // --fn-max-archive-mib
  std::optional<std::uint32_t> fn_max_pooled;  // none: FnMaxPooled's default
  std::uint32_t fn_max_image_mib = 4096;
  std::uint32_t vmm_pool = 0;  // --vmm-pool
  bool fn_egress = false;
  bool fn_egress_private = false;  // clones' egress may reach 10/8, 172.16/12, ...
  std::string log_level;
  std::optional<jailer::SeccompMode> seccomp = jailer::SeccompMode::kEnforce;
  std::string jailer;
  std::optional<std::uint32_t> jailer_id_base;
  std::optional<std::uint32_t> jailer_id_count;
  std::string chroot_base;
  std::string cgroup_parent;
  bool no_jail = false;
};

// Parses and checks emberd's command line (main.cc's first step). --help prints the usage and
// exits 0; a bad flag or a combination that cannot work exits through Fail.
Flags ParseFlags(int argc, char** argv);

// --fn-max-pooled, or its default: a quarter of --max-vms, at most 256.
[[nodiscard]] std::uint32_t FnMaxPooled(const Flags& flags);

// Ends emberd before it serves: `message` on stderr, exit status 2. For start-up only.
[[noreturn]] void Fail(const std::string& message);

}  // namespace ember::emberd

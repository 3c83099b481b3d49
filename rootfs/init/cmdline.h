#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::init {

// The kernel command line split as Linux splits it (lib/cmdline.c, next_arg): words separated
// by white space, where double quotes group spaces into one word and are then dropped
// (`key="a b"` is key `key`, value `a b`). Words after `--` belong to init's argv, not to the
// kernel, and are left out. Built by ember-init from /proc/cmdline; plain value type.
class Cmdline {
 public:
  static Cmdline Parse(std::string_view text);

  // The value of the last `key=value` word with this key (the kernel also lets the last one
  // win); nullopt when absent. A bare `key` word has the empty value.
  [[nodiscard]] std::optional<std::string> Get(std::string_view key) const;

 private:
  std::vector<std::pair<std::string, std::string>> params_;
};

}  // namespace ember::init

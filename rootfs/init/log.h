#pragma once

#include <string_view>

namespace ember::init {

// One line "ember-init: <message>" on stderr, which in a guest is the kernel's console (the
// serial port), in one write so lines from init and the agent do not interleave.
void Log(std::string_view message);

}  // namespace ember::init

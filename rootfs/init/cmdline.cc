#include "rootfs/init/cmdline.h"

namespace ember::init {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

Cmdline Cmdline::Parse(std::string_view text) {
  Cmdline cmdline;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    if (i == text.size()) break;
    std::string word;
    bool in_quote = false;
    for (; i < text.size() && (in_quote || !IsSpace(text[i])); ++i) {
      if (text[i] == '"') {
        in_quote = !in_quote;
      } else {
        word += text[i];
      }
    }
    if (word == "--") break;
    std::size_t equals = word.find('=');
    if (equals == std::string::npos) {
      cmdline.params_.emplace_back(std::move(word), "");
    } else {
      cmdline.params_.emplace_back(word.substr(0, equals), word.substr(equals + 1));
    }
  }
  return cmdline;
}

std::optional<std::string> Cmdline::Get(std::string_view key) const {
  for (auto it = params_.rbegin(); it != params_.rend(); ++it) {
    if (it->first == key) return it->second;
  }
  return std::nullopt;
}

}  // namespace ember::init

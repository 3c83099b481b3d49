// The program in the end-to-end test's OCI image (static: it runs chrooted in the image).
//   guest_app greet WORDS...  prints "hello WORDS from CWD MODE=..." on stdout and "greeted"
//                             on stderr, exits 7 (a non-zero code the test must see come back).
//   guest_app --serve NAME    the resident handler: agent.proto's framing on stdin/stdout (a
//                             4-byte little-endian length, then the bytes); each result is
//                             "NAME:<payload upper-cased> pid=P uid=U cwd=C MODE=M".
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

std::string Cwd() {
  char buffer[4096];
  return getcwd(buffer, sizeof(buffer)) != nullptr ? buffer : "?";
}

std::string Mode() {
  const char* mode = std::getenv("MODE");
  return mode != nullptr ? mode : "(unset)";
}

bool ReadAll(void* data, std::size_t size) {
  auto* at = static_cast<char*>(data);
  while (size > 0) {
    ssize_t got = read(STDIN_FILENO, at, size);
    if (got <= 0) return false;
    at += got;
    size -= static_cast<std::size_t>(got);
  }
  return true;
}

bool WriteAll(const void* data, std::size_t size) {
  const auto* at = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t put = write(STDOUT_FILENO, at, size);
    if (put <= 0) return false;
    at += put;
    size -= static_cast<std::size_t>(put);
  }
  return true;
}

std::uint32_t LittleEndian(const unsigned char bytes[4]) {
  return static_cast<std::uint32_t>(bytes[0]) | static_cast<std::uint32_t>(bytes[1]) << 8 |
         static_cast<std::uint32_t>(bytes[2]) << 16 | static_cast<std::uint32_t>(bytes[3]) << 24;
}

int Serve(const std::string& name) {
  for (;;) {
    unsigned char header[4];
    if (!ReadAll(header, sizeof(header))) return 0;  // the agent closed our stdin
    std::uint32_t length = LittleEndian(header);
    if (length > (1u << 20)) return 3;
    std::string payload(length, '\0');
    if (!ReadAll(payload.data(), payload.size())) return 4;
    for (char& c : payload) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string result = name + ":" + payload + " pid=" + std::to_string(getpid()) +
                         " uid=" + std::to_string(getuid()) + " cwd=" + Cwd() + " MODE=" + Mode();
    auto size = static_cast<std::uint32_t>(result.size());
    unsigned char out[4] = {static_cast<unsigned char>(size), static_cast<unsigned char>(size >> 8),
                            static_cast<unsigned char>(size >> 16),
                            static_cast<unsigned char>(size >> 24)};
    if (!WriteAll(out, sizeof(out)) || !WriteAll(result.data(), result.size())) return 5;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--serve") == 0) return Serve(argv[2]);
  if (argc >= 2 && std::strcmp(argv[1], "greet") == 0) {
    std::string words;
    for (int i = 2; i < argc; ++i) words += std::string(i > 2 ? " " : "") + argv[i];
    std::printf("hello %s from %s MODE=%s\n", words.c_str(), Cwd().c_str(), Mode().c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "greeted\n");
    return 7;
  }
  std::fprintf(stderr, "usage: guest_app greet WORDS... | --serve NAME\n");
  return 2;
}

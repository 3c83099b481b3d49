#pragma once

// Whether this build runs under AddressSanitizer (-DEMBER_SANITIZE=ON, GCC or clang). The
// sanitizer runtime makes system calls of its own (on _exit it takes down its alternate
// signal stack), which tests that put a process under a seccomp allowlist of their own must
// allow in such a build, and only there.
#if defined(__SANITIZE_ADDRESS__)
#define EMBER_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMBER_TEST_SANITIZED 1
#endif
#endif

namespace ember::test {
#ifdef EMBER_TEST_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
}  // namespace ember::test

// The one CHECK of the C++ tests (tests/cpp/test_*.cpp): a pass/fail counter and a failure message.
//
//   CHECK(cond);                          on failure prints "FAIL file:line: cond"
//   CHECK(cond, "fmt %d", value);         ... followed by the printf-formatted message
//   return fastconv_test::summary();      prints "N passed, N failed"; 0 when none failed (main's status)
//
// Every CHECK counts once. Failures go to stdout, in order with the tests' own output.
#pragma once

#include <cstdio>

namespace fastconv_test {

inline int g_passed = 0;
inline int g_failed = 0;

inline void pass() { ++g_passed; }

// Counts a failure and prints its location and expression (no newline: CHECK adds the message).
inline void fail(const char* file, int line, const char* expr) {
  ++g_failed;
  std::printf("FAIL %s:%d: %s", file, line, expr);
}

inline int summary() {
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  std::fflush(stdout);
  return g_failed == 0 ? 0 : 1;
}

}  // namespace fastconv_test

// c10/util/Logging.h has a glog-style CHECK that aborts the process; these tests count instead. Include
// check.h after the torch headers.
#ifdef CHECK
#undef CHECK
#endif
#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (cond) {                                                   \
      ::fastconv_test::pass();                                    \
    } else {                                                      \
      ::fastconv_test::fail(__FILE__, __LINE__, #cond);           \
      __VA_OPT__(std::printf(" -- "); std::printf(__VA_ARGS__);) \
      std::printf("\n");                                          \
    }                                                             \
  } while (0)

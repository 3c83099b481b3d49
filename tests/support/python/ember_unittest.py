"""unittest.main for Ember's Python tests, so that CTest never shows a skipped case as passed.

unittest exits 0 when cases skip, and CTest then reports the test as passed. This runner
lists every skipped case with its reason and exits SKIP (the tests' SKIP_RETURN_CODE) when any
case skipped and none failed. CTest has no "partly skipped": a run where some cases passed and
some skipped is reported as skipped, and the log names the cases that did run and pass."""

import sys
import unittest

SKIP = 77  # CTest SKIP_RETURN_CODE of every Python test


class _Result(unittest.TextTestResult):
    """Also records the cases that passed (unittest keeps only failures and skips)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)


def exit_code(result):
    """The process exit code for a finished run: 1 on any failure or when no case ran at all,
    SKIP when any case skipped, else 0."""
    if not result.wasSuccessful() or result.testsRun == 0:
        return 1
    return SKIP if result.skipped else 0


def main(verbosity=2):
    runner = unittest.TextTestRunner(verbosity=verbosity, resultclass=_Result)
    result = unittest.main(module="__main__", testRunner=runner, exit=False).result
    code = exit_code(result)
    if result.testsRun == 0:
        print("FAILED: no test case ran")
    if code == SKIP:
        print(f"SKIPPED: {len(result.skipped)} of {result.testsRun} cases skipped:")
        for test, reason in result.skipped:
            print(f"  skipped {test.id()}: {reason}")
        if result.passed:
            print(f"(reported as skipped, although {len(result.passed)} cases ran and passed:)")
            for test in result.passed:
                print(f"  passed {test.id()}")
    sys.stdout.flush()
    sys.exit(code)

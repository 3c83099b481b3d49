"""ember_unittest.main's exit codes and report, on small scripts run as CTest runs them: a
skipped case is never reported as passed, and a mixed run names what ran."""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = """import unittest
import ember_unittest

class Cases(unittest.TestCase):
{cases}

if __name__ == "__main__":
    ember_unittest.main()
"""

PASS = "    def test_passes(self):\n        pass\n"
SKIP = "    def test_skips(self):\n        self.skipTest('no widget here')\n"
SKIP_UNLESS = ("    @unittest.skipUnless(False, 'needs a gadget')\n"
               "    def test_skipped_by_decorator(self):\n        pass\n")
FAIL = "    def test_fails(self):\n        self.fail('broken')\n"
NONE = "    pass\n"


class ExitCodes(unittest.TestCase):
    def run_script(self, cases):
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "script_test.py")
            with open(path, "w") as f:
                f.write(SCRIPT.format(cases="".join(cases)))
            env = dict(os.environ, PYTHONPATH=HERE)
            done = subprocess.run([sys.executable, path], env=env, capture_output=True, text=True,
                                  timeout=60)
            return done.returncode, done.stdout + done.stderr

    def test_all_passing_exits_0(self):
        code, _ = self.run_script([PASS])
        self.assertEqual(code, 0)

    def test_all_skipped_exits_77_with_reasons(self):
        code, out = self.run_script([SKIP, SKIP_UNLESS])
        self.assertEqual(code, 77, out)
        self.assertIn("SKIPPED: 2 of 2 cases skipped", out)
        self.assertIn("skipped __main__.Cases.test_skips: no widget here", out)
        self.assertIn("skipped __main__.Cases.test_skipped_by_decorator: needs a gadget", out)
        self.assertNotIn("ran and passed", out)

    def test_mixed_run_exits_77_and_names_what_passed(self):
        code, out = self.run_script([PASS, SKIP])
        self.assertEqual(code, 77, out)
        self.assertIn("SKIPPED: 1 of 2 cases skipped", out)
        self.assertIn("skipped __main__.Cases.test_skips: no widget here", out)
        self.assertIn("although 1 cases ran and passed", out)
        self.assertIn("passed __main__.Cases.test_passes", out)

    def test_failure_wins_over_skip(self):
        code, out = self.run_script([PASS, SKIP, FAIL])
        self.assertEqual(code, 1, out)
        self.assertNotIn("SKIPPED", out)

    def test_no_cases_is_a_failure(self):
        code, out = self.run_script([NONE])
        self.assertEqual(code, 1, out)
        self.assertIn("no test case ran", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

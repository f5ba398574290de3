"""SIGKILL at random moments while bnn_store.h saves states to a file (tests/store_kill.c), at least 50 times: after
every kill the newest complete state loads, its payload is its own, and it is not older than the last save the
program reported done (a save's "saved" line is printed after bnn_state_save returned, so that state was complete).

Usage: python tests/kill_store.py STORE_KILL_BINARY [KILLS] [SEED]   (standard library only)
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time


def main(argv):
    binary, kills = argv[1], int(argv[2]) if len(argv) > 2 else 60
    rnd = random.Random(int(argv[3]) if len(argv) > 3 else 1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "state.bin")
        reported = 0  # the newest sequence a save reported complete
        mid_save = 0
        for k in range(kills):
            p = subprocess.Popen([binary, path, "save", "1000000"], stdout=subprocess.PIPE, text=True)
            time.sleep(rnd.uniform(0.002, 0.05))
            p.send_signal(signal.SIGKILL)
            out, _ = p.communicate()
            lines = [line.split() for line in out.splitlines() if line.startswith("saved ")]
            if lines:
                reported = max(reported, int(lines[-1][1]))
            check = subprocess.run([binary, path, "check"], capture_output=True, text=True)
            words = check.stdout.split()
            if check.returncode != 0:
                print(f"FAIL kill {k}: {check.stdout.strip()}")
                return 1
            if words[:1] == ["no"]:
                if reported:
                    print(f"FAIL kill {k}: no state after save {reported} was reported")
                    return 1
                continue
            seq = int(words[1])
            if seq < reported:
                print(f"FAIL kill {k}: state {seq} loads after save {reported} was reported complete")
                return 1
            mid_save += seq > reported  # the kill came after a save completed but before it was printed
        print(f"kill_store: passed ({kills} SIGKILLs at random moments, the newest state {reported} or later loaded "
              f"every time, its payload its own; {mid_save} kills between a save's end and its report)")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

import subprocess
import sys


def test_device_side_imports_without_torch():
    """The device runtime and the NumPy pieces it shares (data, CWR*, replay memory, metrics) never import torch."""
    code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
            "import bnncl.device.bitpack, bnncl.device.kernels, bnncl.data, bnncl.data.scenarios\n"
            "import bnncl.learning.cwr, bnncl.learning.replay, bnncl.metrics, bnncl.atomic\n"
            "assert sys.modules['torch'] is None\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

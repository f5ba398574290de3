import subprocess
import sys


def test_device_side_imports_without_torch():
    """The device runtime and the NumPy pieces it shares (data, CWR*, replay memory, metrics) never import torch."""
    code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
            "import bnncl.device.bitpack, bnncl.device.kernels, bnncl.data, bnncl.data.scenarios\n"
            "import bnncl.core.cwr, bnncl.core.memory, bnncl.core.metrics, bnncl.core.atomic\n"
            "assert sys.modules['torch'] is None\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

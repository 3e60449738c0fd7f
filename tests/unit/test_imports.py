import subprocess
import sys


def test_import_tutorloop_loads_no_heavy_backends():
    code = ("import sys, tutorloop, tutorloop.config, tutorloop.loop, tutorloop.cli; "
            "heavy = [m for m in ('ray', 'wandb', 'vllm', 'torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

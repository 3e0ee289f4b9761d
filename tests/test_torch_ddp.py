# test_torch_ddp.py: a small fastconv CNN trained for a few SGD steps under
# DistributedDataParallel (2 processes, gloo, localhost) ends with the parameters that
# single-process training on the whole batch gives (tests/ddp_train.py does the training).
import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # three training processes

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_train.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = free_port()
    ranks = [subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / f"rank{r}.pt"), str(r), "2", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    single = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "single.pt")], env=env, capture_output=True,
                            text=True, timeout=120)
    assert single.returncode == 0, single.stdout + single.stderr
    for p in ranks:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    single = torch.load(tmp_path / "single.pt")
    want = single["final"]
    assert any(not torch.equal(want[k], single["initial"][k]) for k in want), "training did not move the parameters"
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")["final"]
        assert got.keys() == want.keys()
        for k in want:
            assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-5), (r, k, (got[k] - want[k]).abs().max())

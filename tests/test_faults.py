"""Runs that survive faults: SIGTERM/SIGINT, --resume=auto, a killed rank under torchrun's restarts, a hung
rank, two "nodes" on one machine (train_gpt.py's training loop and checkpoints)."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import train_gpt as tg
from conftest import SCRIPT, TINY, run, step_lines


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cwd, *argv, torchrun=()):
    """train_gpt.py in the background (under torchrun with these launcher arguments, if any). torchrun gets a
    fresh rendezvous store each restart, as README says to run it (pytorch issue #135712)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", *torchrun] if torchrun else [sys.executable]
    return subprocess.Popen([*launcher, SCRIPT, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env=dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1"))


def wait_for(condition, timeout=300, what="the run"):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def logged_step(log):
    """The newest train step in a log (0 if none yet)."""
    steps = re.findall(r"^step:(\d+)/\d+ train_loss", log.read_text(), re.M) if log.exists() else []
    return int(steps[-1]) if steps else 0


def workers(run_id):
    """{rank: pid} of the train_gpt.py processes of a run (torchrun's children)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
            environ = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
        except OSError:
            continue
        if SCRIPT in cmdline and f"--run_id={run_id}" in cmdline and "RANK" in environ:
            found[int(environ["RANK"])] = int(pid)
    return found


COMMON = [*TINY, "--num_iterations=24", "--val_loss_every=0", "--train_log_every=1"]


@pytest.fixture(scope="session")  # not module: under pytest-xdist a worker may run another module's tests between
def straight(synthetic_data, tmp_path_factory):  # noqa: F811
    """The uninterrupted run every interrupted one must match: -> (cwd, data arguments)."""
    _, data_args = synthetic_data
    cwd = tmp_path_factory.mktemp("straight")
    run(cwd, *COMMON, *data_args, "--run_id=straight")
    return cwd, data_args


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_the_step_and_auto_resume_finishes_the_same_run(straight, tmp_path, sig, code):
    cwd, data_args = straight
    log = tmp_path / "logs/cut.txt"
    proc = start(tmp_path, *COMMON, *data_args, "--run_id=cut")
    wait_for(lambda: logged_step(log) >= 5, what="step 5")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    stopped = re.findall(rf"^stopped by {sig.name} after step (\d+): checkpoint (\S+); continue with "
                         r"--run_id=cut --resume=auto$", out, re.M)
    assert len(stopped) == 1 and "Traceback" not in err, out[-2000:] + err[-2000:]
    step, checkpoint = int(stopped[0][0]), stopped[0][1]
    assert 5 <= step < 24 and checkpoint == f"logs/cut/step_{step:06d}.pt" and (tmp_path / checkpoint).exists()
    run(tmp_path, *COMMON, *data_args, "--run_id=cut", "--resume=auto")
    assert f"resumed (auto) from {checkpoint} at step {step}" in log.read_text()
    resumed, reference = step_lines(log, "train"), step_lines(cwd / "logs/straight.txt", "train")
    assert resumed == reference  # steps before the stop, then the resumed ones: the same numbers
    mine, theirs = (torch.load(d / "final.pt", weights_only=False)["model"] for d in
                    (tmp_path / "logs/cut", cwd / "logs/straight"))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_signal_to_one_rank_stops_every_rank_at_the_step_it_names(straight, tmp_path):
    """Two processes; SIGTERM reaches rank 1 only. It names the first multiple of STOP_CHECK_EVERY two steps on;
    rank 0 reads it from the store there, so both checkpoint the same step, and the resumed run is the
    uninterrupted one."""
    cwd, data_args = straight
    two = ["--standalone", "--nproc_per_node=2"]
    proc = start(tmp_path, *COMMON, *data_args, "--run_id=cut2", torchrun=two)
    wait_for(lambda: logged_step(tmp_path / "logs/cut2.txt") >= 3, what="step 3")
    signalled_after = logged_step(tmp_path / "logs/cut2.txt")
    os.kill(workers("cut2")[1], signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    stopped = re.findall(r"^stopped by SIGTERM after step (\d+): checkpoint (\S+); continue with --run_id=cut2",
                         out, re.M)
    assert len(stopped) == 1, out[-2000:] + err[-3000:]
    step = int(stopped[0][0])
    assert step % tg.STOP_CHECK_EVERY == 0 and signalled_after + 2 <= step <= signalled_after + 2 + tg.STOP_CHECK_EVERY
    proc = start(tmp_path, *COMMON, *data_args, "--run_id=cut2", "--resume=auto", torchrun=two)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and f"at step {step}" in (tmp_path / "logs/cut2.txt").read_text(), err[-3000:]
    mine, theirs = (torch.load(d / "final.pt", weights_only=False)["model"] for d in
                    (tmp_path / "logs/cut2", cwd / "logs/straight"))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_auto_resume_without_a_checkpoint_starts_fresh(synthetic_data, tmp_path):  # noqa: F811
    _, data_args = synthetic_data
    run(tmp_path, *TINY, *data_args, "--num_iterations=2", "--run_id=new", "--resume=auto")
    assert not re.search("^resumed", (tmp_path / "logs/new.txt").read_text(), re.M)
    assert (tmp_path / "logs/new/final.pt").exists()


def test_torchrun_restarts_after_a_killed_rank_and_loses_nothing(straight, tmp_path):
    """torchrun's elastic agent (c10d rendezvous) restarts both workers when one dies; --resume=auto makes the
    restart continue from the newest checkpoint, so the final weights are the uninterrupted run's."""
    cwd, data_args = straight
    two = ["--nnodes=1", "--nproc_per_node=2", "--max_restarts=1", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{free_port()}"]
    proc = start(tmp_path, *COMMON, *data_args, "--run_id=elastic", "--resume=auto", "--checkpoint_every=4",
                 torchrun=two)
    wait_for(lambda: (tmp_path / "logs/elastic/step_000008.pt").exists(), what="the step-8 checkpoint")
    os.kill(workers("elastic")[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    log = (tmp_path / "logs/elastic.txt").read_text()
    assert re.search(r"^resumed \(auto\) from logs/elastic/step_0000(08|12|16|20)\.pt at step", log, re.M), log[-2000:]
    mine, theirs = (torch.load(d / "final.pt", weights_only=False)["model"] for d in  # 2 ranks = 1 process
                    (tmp_path / "logs/elastic", cwd / "logs/straight"))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_hung_rank_stops_the_others_after_the_timeout(straight, tmp_path):
    _, data_args = straight
    proc = start(tmp_path, *COMMON, *data_args, "--num_iterations=200", "--run_id=hung", "--collective_timeout=10",
                 torchrun=["--standalone", "--nproc_per_node=2"])
    wait_for(lambda: logged_step(tmp_path / "logs/hung.txt") >= 3, what="step 3")
    stopped_at = time.time()
    os.kill(workers("hung")[1], signal.SIGSTOP)  # a rank that hangs, as a stuck GPU would
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        for pid in workers("hung").values():
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode != 0 and time.time() - stopped_at < 60
    lines = re.findall(r"train_gpt\.py: rank 0: no answer from another rank within --collective_timeout=10s "
                       r"after step \d+ \(one died or hangs\); stopping", err)
    assert len(lines) == 1, err[-3000:]


def test_two_nodes_on_one_machine_train_as_one_process(straight, tmp_path):
    cwd, data_args = straight
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [start(tmp_path, *COMMON, *data_args, "--run_id=nodes",
                   torchrun=["--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                             "--rdzv_id=nodes"]) for _ in range(2)]
    for node in nodes:
        out, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    log = tmp_path / "logs/nodes.txt"
    assert "world_size: 2" in log.read_text()
    assert step_lines(log, "train") == step_lines(cwd / "logs/straight.txt", "train")

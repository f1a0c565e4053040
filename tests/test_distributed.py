"""Two processes (torchrun, gloo on CPU) train the same weights as one with the same global batch.

Why it holds: the sampler deals each global batch round-robin to the processes; the masks are
drawn for the global batch from a (seed, step) generator and sliced the same way; every loss
is a mean over the clips of a batch, and DDP averages the two processes' gradients, so the
averaged gradient is the one-process gradient of the whole batch. Only the summation order
differs: equal within float tolerance, not bit for bit.

Except where the exact gradient is zero: the key bias of attention (softmax ignores a shift
shared by all keys) and the cpredlayer biases (the InfoNCE softmax ignores a shift shared by all
predictions; the first layer's bias almost). There the gradient is rounding noise, and Adam,
which divides by its running size, turns noise into full-size steps in either run. Those
tensors are only bounded by the sum of the step sizes (lr per step).

A stop asked for in one process (a callback's KeyboardInterrupt, which only rank 0 calls) stops
every process after the same step.

Downloads under torchrun: process 0 fetches a checkpoint and a dataset from a local server while
process 1 waits, then both use the same verified files; a failure of process 0 stops process 1
without it fetching anything.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
from local_http import FileServer

from ssast_teach.checkpoints import load_state_dict
from ssast_teach.pretrain import PretrainConfig, pretrain
from ssast_teach.training import load_train_checkpoint

ARGS = ["--scale", "ci", "--precision", "fp32", "--epochs", "2", "--no-progress"]


@pytest.mark.distributed
def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "ssast_teach.pretrain", *ARGS, "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "over 2 process(es)" in done.stdout

    config = PretrainConfig.preset("ci", precision="fp32", epochs=2, progress=False)
    one, history = pretrain(config, out_dir=tmp_path / "one")
    two = load_state_dict(tmp_path / "two" / "pretrained.pth")
    lr_sum = sum(r["lr"] for r in history.where("step"))
    d = one.v.pos_embed.shape[-1]  # D
    for key, value in one.state_dict().items():
        other = two[key]
        if key.endswith("attn.qkv.bias"):  # (3D,): q, k, v biases; k has no exact gradient
            assert (other[d : 2 * d] - value[d : 2 * d]).abs().max() <= 2 * lr_sum, key
            value, other = (torch.cat([t[:d], t[2 * d :]]) for t in (value, other))
        elif key in ("cpredlayer.0.bias", "cpredlayer.2.bias"):
            assert (other - value).abs().max() <= 2 * lr_sum, key
            continue
        torch.testing.assert_close(other, value, rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")


# Run by each process: a ci pretraining whose callback (called on rank 0 only) asks to stop at
# step 4; each process writes the steps it took and how its run ended.
_STOPPER = textwrap.dedent("""
    import json, os, sys
    from ssast_teach import training
    from ssast_teach.pretrain import PretrainConfig, pretrain

    steps = []
    record_step = training.TrainRun.record_step
    def counting(self, loss, metrics=None):
        steps.append(record_step(self, loss, metrics)["step"])
    training.TrainRun.record_step = counting

    def stop_at_4(row):
        if row["kind"] == "step" and row["step"] == 4:
            raise KeyboardInterrupt

    config = PretrainConfig.preset("ci", precision="fp32", epochs=2, progress=False)
    try:
        pretrain(config, out_dir=sys.argv[1], callback=stop_at_4)
        ended = "finished"
    except KeyboardInterrupt:
        ended = "interrupted"
    with open(f"{sys.argv[1]}/rank{os.environ['RANK']}.json", "w") as f:
        json.dump({"steps": steps, "ended": ended}, f)
""")


@pytest.mark.distributed
def test_an_interrupt_on_rank_0_stops_every_process_at_the_same_step(tmp_path):
    script = tmp_path / "stopper.py"
    script.write_text(_STOPPER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script), str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / "run" / f"rank{rank}.json").read_text())
        assert result == {"steps": [1, 2, 3, 4], "ended": "interrupted"}, rank
    assert load_train_checkpoint(tmp_path / "run")["state"]["step"] == 4


# Run by each process: download one checkpoint and prepare FSDD (a two-file fake pinned by a
# fake manifest), both from the local server, then a checkpoint the server does not have.
_DOWNLOADER = textwrap.dedent("""
    import dataclasses, json, os, sys
    import torch.distributed as dist
    from ssast_teach import checkpoints, datasets
    from ssast_teach.download import DownloadError, sha256_of

    dist.init_process_group("gloo")
    rank, out, base = dist.get_rank(), sys.argv[1], os.environ["BASE_URL"]
    manifest = json.loads(os.environ["MANIFEST"])
    datasets._pinned = lambda name: manifest
    name = "SSAST-Tiny-Patch-400"
    entry = checkpoints.REGISTRY[name]
    checkpoints.REGISTRY[name] = dataclasses.replace(entry, url=base + "/tiny.pth")
    path = checkpoints.download(name, f"{out}/cache", progress=False)
    splits = datasets.prepare_fsdd(f"{out}/data")
    checkpoints.REGISTRY[name] = dataclasses.replace(entry, url=base + "/missing.pth")
    try:
        checkpoints.download(name, f"{out}/other", progress=False)
        error = None
    except DownloadError as err:
        error = str(err)
    result = {"path": str(path), "sha256": sha256_of(path), "error": error,
              "clips": sorted(item["wav"] for s in splits.values() for item in s.items)}
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
""")


@pytest.mark.distributed
def test_one_process_downloads_the_others_wait(tmp_path):
    payload = os.urandom(50_000)
    commit = "0" * 40
    recordings = {f"recordings/{d}_x_{d}.wav": bytes([d]) * 100 for d in (1, 9)}
    blobs = {p: hashlib.sha1(b"blob 100\0" + d).hexdigest() for p, d in recordings.items()}
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        for p, d in recordings.items():
            z.writestr(f"fsdd-{commit}/{p}", d)
    script = tmp_path / "downloader.py"
    script.write_text(_DOWNLOADER)
    files = {"/tiny.pth": payload, f"/o/fsdd/archive/{commit}.zip": zipped.getvalue()}
    with FileServer(files) as server:
        manifest = {"repository": server.url("/o/fsdd"), "commit": commit, "files": blobs}
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "BASE_URL": server.url(), "MANIFEST": json.dumps(manifest)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", str(script), str(tmp_path)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # One request each: process 1 fetched nothing, not even the missing file.
    assert sorted(server.requests) == sorted([*files, "/missing.pth"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["path"] == ranks[1]["path"] == str(tmp_path / "cache/SSAST-Tiny-Patch-400.pth")
    assert ranks[0]["sha256"] == ranks[1]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert ranks[0]["clips"] == ranks[1]["clips"] and len(ranks[0]["clips"]) == 2
    assert "404" in ranks[0]["error"]
    assert "process 0 could not get checkpoint SSAST-Tiny-Patch-400" in ranks[1]["error"]

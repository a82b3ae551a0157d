"""Progress in a batch log: one readable line per interval instead of tqdm's carriage-return bars."""
from __future__ import annotations

import re

from runs import run


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path, capfd):
    run(["trainer.max_steps=4", "trainer.progress=true", "trainer.progress_every_s=0",
         "trainer.logging_steps=2"], tmp_path)
    out, err = capfd.readouterr()
    steps = [int(m) for m in re.findall(r"^progress step (\d+)/4 ", out, re.M)]
    assert steps == [1, 2, 3, 4]  # every step at an interval of 0 s, the last one always
    assert re.search(r"^progress step 4/4 \(100\.0%\) epoch [\d.]+/1 loss \d+\.\d{4} lr ", out, re.M)
    assert "it/s]" not in out + err and "\r" not in out + err  # no tqdm bar
    assert "{'loss'" not in out  # nor the Trainer's raw log dicts


def test_no_lines_with_progress_off(tmp_path, capfd):
    run(["trainer.max_steps=2", "trainer.progress=false"], tmp_path)
    out, err = capfd.readouterr()
    assert "progress step" not in out and "it/s]" not in out + err

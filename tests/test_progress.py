"""Progress in a log is a line per 10 %, not bar redraws (Prefect's logs were flooded)."""

from __future__ import annotations

import io
import logging

from bvae.progress import LineProgress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_a_line_per_ten_percent_and_a_terminal_a_bar(caplog):
    with caplog.at_level(logging.INFO, logger="bvae.progress"):
        bar = progress(total=300, initial=30, desc="train", unit="step", stream=io.StringIO())
        assert isinstance(bar, LineProgress)
        with bar:
            for step in range(270):
                bar.update(1)
                if step == 100:
                    bar.set_postfix(loss="51.2")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 9  # 20 %, 30 %, … 100 %: resumed at 10 %, so 10 % was never crossed
    assert lines[0].startswith("train:  20% (60/300 step, ") and "s left" in lines[0]
    assert lines[-1].startswith("train: 100% (300/300 step, ") and "loss 51.2" in lines[-1]
    shards = [1, 2, 3, 4]
    assert list(progress(shards, desc="load shards", stream=io.StringIO())) == shards
    from tqdm import tqdm

    assert isinstance(progress(total=10, stream=Terminal()), tqdm)

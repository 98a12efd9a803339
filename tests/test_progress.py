"""Progress output: tqdm on a terminal; periodic plain lines (no carriage returns) into files and pipes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from llmrl.core.progress import PlainProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gives_plain_lines_with_postfix():
    out = io.StringIO()
    bar = progress_bar(1000, "rl", file=out)
    assert isinstance(bar, PlainProgress)
    for i in range(1000):
        bar.update(1)
        bar.set_postfix(reward=f"{i / 1000:.3f}", acc=0.25)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 11  # the start, then one per tenth (the last is 100%): nothing more on close
    assert lines[0].startswith("rl 0/1000 (0%)")
    # the line due at an update carries that step's postfix (set right after the update)
    assert lines[3].startswith("rl 300/1000 (30%) reward=0.299 acc=0.25 | ") and "ETA" in lines[3]
    assert lines[-1].startswith("rl 1000/1000 (100%) reward=0.999 acc=0.25 | ") and "ETA" not in lines[-1]


def test_terminal_gets_tqdm_and_disabled_gets_none():
    from tqdm.auto import tqdm

    bar = progress_bar(3, "sft", file=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert progress_bar(3, "sft", enabled=False) is None


def test_time_based_lines_between_tenths():
    clock, out = _Clock(), io.StringIO()
    bar = PlainProgress(10_000, "sft", file=out, interval=30.0, clock=clock)
    for _ in range(500):  # 5%: no tenth passed; 1 s per step: a line every 30 s
        clock.t += 1.0
        bar.update(1)
        bar.set_postfix(loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 500 // 30
    assert lines[1].startswith("sft 30/10000 (0%) loss=0.5 | 30.0 s elapsed, 1 it/s, ETA 2h46m")
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("sft 500/10000 (5%) loss=0.5 | 8m20s elapsed")


def test_due_line_without_postfix_is_printed_by_the_next_update_or_close():
    out = io.StringIO()
    bar = PlainProgress(7, "rollouts", initial=2, file=out, unit="problem")
    bar.update(3)  # 5/7: due, no set_postfix follows
    bar.update(2)  # prints the 5/7 line, then 7/7 is due
    bar.close()
    bar.close()  # a second close prints nothing
    assert [line.split(" | ")[0] for line in out.getvalue().splitlines()] == [
        "rollouts 2/7 (29%)", "rollouts 5/7 (71%)", "rollouts 7/7 (100%)"]
    assert "problem/s" in out.getvalue()


def test_broken_stream_does_not_raise():
    out = io.StringIO()
    bar = PlainProgress(4, "dpo", file=out)
    out.close()
    bar.update(4)
    bar.close()


def test_run_with_stderr_in_a_file_writes_plain_progress(tmp_path):
    """A real run (SFT warm start + RL) with stderr redirected: no carriage returns, a bounded number of lines,
    and the trainers' postfix values in them."""
    log = tmp_path / "stderr.log"
    argv = ["quickstart", "--output-dir", str(tmp_path / "qs"), "steps=4", "sft.steps=30", "progress=true",
            "threads=1", "task.train_size=64", "task.test_size=8", "eval.samples=2", "eval.pass_k=[1,2]",
            "eval.every=0", "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
            "rollout.prompts_per_step=4", "rollout.samples_per_prompt=4"]
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-c", f"from llmrl.cli import main; raise SystemExit(main({argv!r}))"],
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=600)
    raw = log.read_bytes()  # bytes: reading text would turn each carriage return into a newline
    text = raw.decode()
    assert proc.returncode == 0, text
    assert b"\r" not in raw, text  # neither our bars nor transformers' ("Writing model shards")
    sft = [line for line in text.splitlines() if line.startswith("sft ")]
    rl = [line for line in text.splitlines() if line.startswith("rl ")]
    assert 2 <= len(sft) <= 12 and 2 <= len(rl) <= 12, text
    assert sft[-1].startswith("sft 30/30 (100%) loss=")
    assert rl[-1].startswith("rl 4/4 (100%) reward=") and " acc=" in rl[-1] and " eval_acc=" in rl[-1]
    assert len(text.splitlines()) < 60, text


def test_library_bars_quiet_only_off_a_terminal(monkeypatch):
    from llmrl.core.progress import quiet_library_bars

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    quiet_library_bars(_Terminal())
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")  # a user's own setting is kept
    quiet_library_bars(io.StringIO())
    env = os.environ
    assert env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and env["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "0"

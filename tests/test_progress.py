import logging

from agemapper import progress as P


def test_progress_logs_every_tenth_with_rate_and_eta(caplog, monkeypatch):
    clock = iter(range(100))  # one second per call to time.monotonic
    monkeypatch.setattr(P.time, "monotonic", lambda: float(next(clock)))
    log = logging.getLogger("agemapper.test")
    bar = P.Progress("T1_nonlinear female train", 20, "subject", log=log)  # starts at t=0
    with caplog.at_level("INFO", logger="agemapper.test"):
        for i in range(20):
            bar.update(i + 1)  # only every 2nd asks the clock
    lines = caplog.messages
    assert len(lines) == 10
    assert lines[0] == "T1_nonlinear female train: 2/20 subjects, 2.0 subjects/s, ETA 9 s"
    assert (
        lines[-1].startswith("T1_nonlinear female train: 20/20 subjects") and "ETA 0 s" in lines[-1]
    )


def test_progress_of_a_resumed_loop_that_may_stop_early(caplog, monkeypatch):
    monkeypatch.setattr(P.time, "monotonic", iter([0.0, 600.0]).__next__)
    bar = P.Progress("swi male", 250, "epoch", every=1, done=100, upper_bound=True)
    with caplog.at_level("INFO", logger="agemapper"):
        bar.update(102, "rep1 loss 3.2")
    # 2 epochs in this run's 600 s: 300 s each, 148 left
    assert caplog.messages == [
        "swi male: 102/250 epochs, 300.0 s/epoch, ETA <= 12.3 h | rep1 loss 3.2"
    ]


def test_durations_read_at_a_glance():
    assert [P.duration(s) for s in (4.4, 119, 600, 7300)] == ["4 s", "119 s", "10 min", "2.0 h"]


def test_progress_that_advances_a_batch_at_a_time(caplog):
    bar = P.Progress("swi_female_test.cache", 100, "subject")  # a line per 10 subjects
    with caplog.at_level("INFO", logger="agemapper"):
        for done in range(4, 101, 4):  # batches of 4: the first past each tenth is logged
            bar.update(done)
    logged = [int(m.split(": ")[1].split("/")[0]) for m in caplog.messages]
    assert logged == [12, 20, 32, 40, 52, 60, 72, 80, 92, 100]

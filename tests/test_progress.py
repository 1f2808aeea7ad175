"""progress.py: when the log lines come (at most every `every` seconds while the job runs, at its
end only when asked) and what they say, and the bar on a terminal."""

import progress


def logged_lines(monkeypatch):
    lines = []
    monkeypatch.setattr(progress.logging, "info", lambda text, *args: lines.append(text % args))
    return lines


def describe(done, total, seconds, values):
    return f"{done}/{total} {dict(values or {})}"


def test_without_a_bar_a_line_every_interval_while_running_and_at_the_end_only_when_asked(monkeypatch):
    lines = logged_lines(monkeypatch)
    job = progress.Progress(3, False, describe, every=0.0)                 # every update is due
    for done in (1, 2, 3):
        job.update(done, [("distance", 0.5)])
    assert lines == ["1/3 {'distance': 0.5}", "2/3 {'distance': 0.5}"]      # the caller's summary says the end
    lines.clear()
    ending = progress.Progress(3, False, describe, every=1e9, log_end=True)  # never due by time
    for done in (1, 2, 3):
        ending.update(done)
    assert lines == ["3/3 {}"] and ending.bar is None


def test_with_a_bar_nothing_is_logged_and_the_bar_counts(monkeypatch, capsys):
    lines = logged_lines(monkeypatch)
    job = progress.Progress(2, True, describe, every=0.0, unit_name="file", log_end=True)
    job.update(1)
    job.update(2)
    assert lines == [] and "2/2" in capsys.readouterr().out

"""Progress of a long job: a Keras progress bar on a terminal, else a log line every few seconds.

Lives here: `Progress`, which decoding slices (data.py) and projecting them (projection.py) report
to. Not here: what each job says in its log lines and when it ends (its caller passes `describe`
and logs its own summary), the training loop's bar (training.py, which steps with `fit`).
"""

import time

import keras
from absl import logging


class Progress:
    """How far a job of `total` units is. With `show_bar`, a Keras progress bar (`values` beside it);
    else the text of `describe(done, total, seconds, values)` logged at most every `every` seconds
    while the job runs, and also when it ends with `log_end` (else the caller's summary says that)."""

    def __init__(self, total, show_bar, describe, every, unit_name="step", stateful_metrics=None,
                 log_end=False):
        self.total, self.describe, self.every, self.log_end = total, describe, float(every), log_end
        self.start = self.last_log = time.time()
        self.bar = (keras.utils.Progbar(total, unit_name=unit_name, stateful_metrics=stateful_metrics)
                    if show_bar else None)

    def update(self, done, values=None):
        """`done` units of `total` are finished; `values`: [(name, number)] to show with them."""
        if self.bar is not None:
            self.bar.update(done, values=values)
            return
        now = time.time()
        if (now - self.last_log >= self.every and done < self.total) or (self.log_end and done == self.total):
            self.last_log = now
            logging.info("%s", self.describe(done, self.total, now - self.start, values))

    def seconds(self):
        """Seconds since the job started."""
        return time.time() - self.start

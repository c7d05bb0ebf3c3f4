"""hf_select.interrupt: signals become Interrupted (exit 128 + signal), even through a bare ``except:``."""

import os
import signal
import time

import pytest

from hf_select.interrupt import Interrupted, deferred_signals, exit_on_signals


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_raises_interrupted_with_its_exit_code(sig, code):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as info, exit_on_signals():
        os.kill(os.getpid(), sig)
        time.sleep(5)
    assert info.value.exit_code == code and isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_a_signal_swallowed_by_a_bare_except_is_delivered_again():
    start = time.monotonic()
    with pytest.raises(Interrupted), exit_on_signals():
        try:  # as datasets does around hashing a map function
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except:  # noqa: E722
            pass
        time.sleep(30)
    assert time.monotonic() - start < 20
    time.sleep(1.5)  # no stray delivery once the block is left


def test_deferred_signals_record_the_first_and_raise_on_the_second():
    with pytest.raises(Interrupted), deferred_signals() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert received.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

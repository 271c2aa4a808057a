"""The agent's stop flag: a timed wait that set() ends early, from a thread or a signal handler.

What it is for, a wait that a wall clock stepped back does not stretch on Python 3.9, cannot be shown
here: stepping this machine's clock would disturb every other process, and libfaketime compensates the
semaphore waits it would have to fake. The module docstring gives the reason (CPython bpo-41710).
"""
import os
import signal
import threading
import time

from otel_efa.pipeline.stop_flag import StopFlag


def test_wait_times_out_unset_and_returns_at_once_when_set():
    flag = StopFlag()
    started = time.monotonic()
    assert flag.wait(0.2) is False
    assert time.monotonic() - started >= 0.2
    flag.set()
    flag.set()  # twice is once
    started = time.monotonic()
    assert flag.wait(30) is True and flag.wait(30) is True
    assert time.monotonic() - started < 5
    flag.close()
    flag.close()
    flag.set()  # after close: only the flag, no write to a closed descriptor
    assert flag.is_set()


def test_set_from_another_thread_ends_a_long_wait():
    flag = StopFlag()
    threading.Timer(0.2, flag.set).start()
    started = time.monotonic()
    assert flag.wait(30) is True
    assert time.monotonic() - started < 5
    flag.close()


def test_set_from_a_signal_handler_ends_a_long_wait():
    """As SIGTERM reaches the agent: at the main thread, which is waiting."""
    flag = StopFlag()
    previous = signal.signal(signal.SIGUSR1, lambda *_: flag.set())
    sender = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1))
    try:
        sender.start()
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 5
    finally:
        sender.join()  # the signal is out before the handler goes back to the default (terminate)
        signal.signal(signal.SIGUSR1, previous)
        flag.close()


def test_works_with_descriptors_numbered_above_1024():
    """The agent holds more than a thousand counter files open before it makes its flag."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        flag = StopFlag()
        assert flag.wait(0.05) is False
        threading.Timer(0.1, flag.set).start()
        assert flag.wait(30) is True
        flag.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

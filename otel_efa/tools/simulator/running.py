"""The simulator advancing in a background thread."""
import threading


class RunningSimulator:
    """The simulator advancing in a background thread; stop() (or the with-block) ends it."""

    def __init__(self, simulator, tick: float):
        self.simulator = simulator
        self._stop = threading.Event()
        self._thread = threading.Thread(target=simulator.run, args=(tick, self._stop),
                                        name="efa-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self.simulator

    def __exit__(self, *exc) -> None:
        self.stop()

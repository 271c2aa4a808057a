"""CloudWatch PutMetricData straight from the node, the quick-start's contract made to hold.

``export()`` only turns the Snapshot into samples and appends them to the open batch; every
``batch_size`` collections the batch is closed and the sender thread wakes: it folds the batch into
datums (see :mod:`otel_efa.cloudwatch.packing`), appends them to a bounded FIFO buffer and drains the
buffer in as few calls as the API limits allow. A call that still fails after botocore's retries puts
its datums back at the front, so nothing is lost or sent twice; the next flush tries again. The buffer
keeps ``buffer_minutes`` of data
(by the monotonic time of collection): beyond that the oldest datums are dropped and counted in
``otel_efa_dropped_datapoints``. ``shutdown()`` (SIGTERM) closes the open batch and sends it.

Datapoints carry the wall-clock time of their collection, as CloudWatch expects, but their age in the
buffer is measured on the monotonic clock: when NTP steps the wall clock back, the datapoints stamped
after the step look older than those before it, and an age by timestamp would drop them as "too old"
although they are new. A step back only moves where CloudWatch files the points; none is dropped.
"""
import logging
import threading
from collections import deque
from typing import Any, Deque, List, Optional

from otel_efa.cloudwatch import metrics, packing, session
from otel_efa.exporters import Exporter, ExporterContext
from otel_efa.pipeline.interval import Interval

log = logging.getLogger(__name__)

# Errors that mean "try the same data later" once botocore's own retries are spent; any other error
# means CloudWatch refused the data itself, which would fail forever, so it is dropped and counted.
_KEEP_ERROR_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable",
    "InternalServiceFault", "InternalFailure", "RequestTimeout", "AccessDenied",
    "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
})


class CloudWatchExporter(Exporter):
    name = "cloudwatch"

    def __init__(self, context: ExporterContext):
        super().__init__(context)
        self.config = context.config.cloudwatch
        self.region = session.resolve_region(self.config.region, context.resource)
        self.instance_id = session.resolve_instance_id(context.resource)
        self.namespace = self.config.namespace
        self._specs = metrics.published_specs(self.config)
        self._sets = metrics.dimension_sets(self.config)
        self._clock = context.clock
        self._window_s = self.config.buffer_minutes * 60
        self._lock = threading.Condition()
        self._pending: List[metrics.Sample] = []
        self._pending_intervals = 0
        self._closed: List[List[metrics.Sample]] = []  # closed batches the sender has not folded yet
        self._buffer: Deque[packing.Datum] = deque()
        self._newest = float("-inf")  # monotonic time of the newest datum's collection
        self._requested = 0  # flush passes asked for
        self._completed = 0  # flush passes finished
        self._stopping = False
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._client: Any = None
        self._failing_since: Optional[float] = None  # monotonic start of the current outage
        self._in_flight = 0  # datapoints in the PutMetricData call under way
        self.calls = 0  # successful PutMetricData calls (for logs and benchmarks)

    # --- the collection loop's side: never blocks on the network ------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cloudwatch-sender", daemon=True)
        self._thread.start()

    def export(self, interval: Interval) -> None:
        new = metrics.samples(interval.snapshot, self._specs, self._sets, self.instance_id,
                              self.config.cluster_name, ",".join(self.job_ids()) or None)
        with self._lock:
            self._pending.extend(new)
            self._pending_intervals += 1
            if self._pending_intervals >= self.config.batch_size:
                self._close_batch()
                self._request_pass()

    def _close_batch(self) -> None:
        """Hand the open batch to the sender (caller holds the lock)."""
        if self._pending:
            self._closed.append(self._pending)
        self._pending = []
        self._pending_intervals = 0

    def _fold_closed(self) -> None:
        """Sender thread: closed batches into datums at the end of the buffer."""
        with self._lock:
            closed, self._closed = self._closed, []
        for batch in closed:
            datums = packing.fold(batch, self.config.storage_resolution)
            with self._lock:
                self._buffer.extend(datums)
                self._newest = max(self._newest, max(d.collected for d in datums))
                self._enforce_window()

    def _enforce_window(self) -> None:
        dropped = 0
        while self._buffer and self._buffer[0].collected < self._newest - self._window_s:
            dropped += self._buffer.popleft().samples
        if dropped:
            self.stats.add_dropped_datapoints(dropped)
            log.warning("CloudWatch buffer holds %g minutes: dropped the oldest %d datapoints",
                        self.config.buffer_minutes, dropped)

    def _request_pass(self) -> int:
        self._requested += 1
        self._wake.set()
        return self._requested

    # --- flushing ---------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Send everything collected so far; True when the buffer is empty within ``timeout``."""
        with self._lock:
            self._close_batch()
            target = self._request_pass()
            self._lock.wait_for(lambda: self._completed >= target, timeout)
            return not self._buffer and not self._closed

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            self._close_batch()
            self._stopping = True
            self._request_pass()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            unsent, in_flight = self._unsent(), self._in_flight
        if unsent or in_flight:
            log.warning("CloudWatch: %d datapoints not sent at shutdown, %d more in a PutMetricData call "
                        "still unanswered (they may have arrived)", unsent, in_flight)

    @property
    def buffered_datapoints(self) -> int:
        with self._lock:
            return self._unsent()

    def _unsent(self) -> int:
        """Datapoints collected and not yet handed to CloudWatch (caller holds the lock)."""
        return sum(d.samples for d in self._buffer) + sum(len(b) for b in self._closed) + len(self._pending)

    # --- the sender thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                pass_id = self._requested
                stopping = self._stopping
            try:
                self._fold_closed()
                self._drain()
            except Exception:  # a bug here must not kill the thread and strand the buffer
                log.exception("CloudWatch sender failed; retrying at the next flush")
            with self._lock:
                self._completed = pass_id
                self._lock.notify_all()
            if stopping:
                return

    def _drain(self) -> None:
        if self._client is None:
            self._client = session.client("cloudwatch", self.region, self.config.retry_mode,
                                          self.config.max_attempts)
        protocol = self._client.meta.service_model.protocol
        while True:
            with self._lock:
                n = packing.request_length(self._buffer, protocol)
                batch = [self._buffer.popleft() for _ in range(n)]
                self._in_flight = sum(d.samples for d in batch)
            if not batch:
                return
            try:
                sent = self._send(batch)
            finally:
                with self._lock:
                    self._in_flight = 0
            if not sent:
                return

    def _send(self, batch: List[packing.Datum]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_metric_data(Namespace=self.namespace, MetricData=[d.body for d in batch])
        except (BotoCoreError, ClientError) as e:
            code = e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else ""
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) \
                if isinstance(e, ClientError) else 0
            keep = not code or code in _KEEP_ERROR_CODES or status >= 500 or status == 429
            with self._lock:
                if keep:
                    self._buffer.extendleft(reversed(batch))
                    self._enforce_window()
                else:
                    self.stats.add_dropped_datapoints(sum(d.samples for d in batch))
            if keep and self._failing_since is None:
                self._failing_since = self._clock()
                log.warning("CloudWatch PutMetricData failed (%s); collection goes on and the datapoints are "
                            "kept for the next flush (%d now)", e, self.buffered_datapoints)
            elif not keep:
                log.error("CloudWatch refused %d datums (%s); dropped", len(batch), e)
            return False
        self.calls += 1
        if self._failing_since is not None:
            log.warning("CloudWatch PutMetricData works again after %.0f s; the datapoints kept meanwhile "
                        "follow (%d left)", self._clock() - self._failing_since, self.buffered_datapoints)
            self._failing_since = None
        return True

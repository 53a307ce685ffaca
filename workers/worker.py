"""A worker process: takes jobs from the consumer group and runs many generations at once.

Every run lives in the worker's task group inside its own cancel scope, keyed by run id, so a
control message (or shutdown) cancels exactly that run; whatever stops a run, its terminal event
is written under a shield and its job is acknowledged.

A job's idle time in the consumer group's pending list is its lease (``broker.engine.queue``): the
worker renews the jobs it holds, and every worker claims jobs left idle for a whole lease, never
its own live ones. A claimed job that never started runs normally. A started run is fenced:
``store`` records its owner and an epoch, and checks both in every append and terminal script.
The worker that claims a lapsed started run takes it over (a new epoch) and ends it once, as
``worker_lost``; its old owner, if it was only paused, can write nothing more, learns so at its
next append or lease renewal, and abandons the run, closing its model call.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
import uuid

import anyio
import anyio.abc
import msgspec

from broker.core import logs, webhook
from broker.core.backoff import Backoff
from broker.core.catalogue import Catalogue, CatalogueError
from broker.core.events import (
    TERMINAL_EVENTS,
    TERMINAL_STATES,
    ErrorInfo,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunState,
    encode,
)
from broker.core.finished import RunEnded
from broker.core.jobs import Job, control_decoder, job_decoder
from broker.core.settings import Settings
from broker.engine import Engine
from broker.engine.connections import unavailable_errors
from broker.engine.conversations import Ended, Fence, Refused, Started
from broker.engine.pubsub import never_resync
from broker.engine.queue import Handed
from workers import metrics as worker_metrics
from workers.context import conversation_context
from workers.generators import (
    ApplicationGenerator,
    GeneratorImportError,
    bind_generators,
    import_generators,
)
from workers.providers import default_providers
from workers.providers.base import Failure, Finish, GenerationRequest, Message, Provider
from workers.providers.upstream import make_client
from workers.relay import CancelRequested, Fenced, Generation, Outcome, RunGone
from workers.slots import Freed, Slots
from workers.wakes import WakeDispatcher
from workers.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)

# How long a job may wait for its run to be accepted (the front queues the job just before);
# about 1.5 s in all, far beyond the milliseconds between the two writes.
_ACCEPT_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)
_SHUTDOWN = "shutdown"
_USER = "user"
_LOST = "lost"  # another worker took the run over: write nothing more
_TIMEOUT = "timeout"  # the run reached BROKER_MAX_RUN_SECONDS


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # What the job-queue loops retry: a failover may also tear a cluster connection down.
        self._unavailable = unavailable_errors(settings.redis_cluster)
        try:
            self.catalogue = Catalogue.from_settings(settings)
            self._generator_functions = import_generators(self.catalogue)
        except CatalogueError as exc:
            raise SystemExit(f"model catalogue: {exc}") from None
        except GeneratorImportError as exc:
            raise SystemExit(str(exc)) from None
        _check_webhook(settings)
        self.providers: dict[str, Provider] = {}
        self.generators: dict[str, ApplicationGenerator] = {}
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = settings.worker_concurrency
        self._running: dict[str, anyio.CancelScope] = {}
        self._stop_reasons: dict[str, str] = {}
        # Runs this worker holds a slot for, by subject, and the jobs waiting for one.
        self.slots: Slots[tuple[str, bytes, Job]] = Slots(self.concurrency)
        # Job entries this worker holds the lease of, by (jobs stream, entry id): their run ids.
        self._jobs: dict[tuple[str, bytes], str] = {}
        self._reserved = 0  # slots promised to job reads in progress
        self._slot_freed = Freed()
        self._stopping = anyio.Event()
        self.metrics = worker_metrics.WorkerMetrics()
        self.metrics.runs_active.set_function(lambda: self.slots.in_use)

    async def run(self) -> None:
        self.engine = Engine(
            self.settings, "worker", retry_seconds=self.settings.redis_retry_seconds
        )
        # One consumer per shard of the jobs queue: a command names one stream (one slot).
        self.leases = self.engine.queue.leases(self.name)
        try:
            await self.engine.connect()
            listener = None
            if self.settings.worker_metrics_port:
                listener = await worker_metrics.listen(
                    self.settings.worker_metrics_host, self.settings.worker_metrics_port
                )
            async with make_client(self.settings) as http, anyio.create_task_group() as services:
                if listener is not None:
                    services.start_soon(
                        worker_metrics.serve, listener, self.metrics, self.engine.queue
                    )
                self.providers = default_providers(self.settings, self.catalogue, http)
                self.generators = bind_generators(
                    self._generator_functions, self.catalogue, self.providers
                )
                services.start_soon(self._watch_signals)
                services.start_soon(self._listen_control)
                services.start_soon(self._renew_leases)
                if self.settings.webhook_url:
                    dispatcher = WebhookDispatcher(self.engine, self.settings, self.name)
                    services.start_soon(dispatcher.run)
                # Durable Streams subscriptions: every worker delivers their wakes.
                services.start_soon(WakeDispatcher(self.engine, self.settings, self.name).run)
                async with anyio.create_task_group() as runs:
                    runs.start_soon(self._reap, runs)
                    await self._consume(runs)
                    await self._drain()
                services.cancel_scope.cancel()
        finally:
            await self.engine.aclose()
        log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self._stopping.set()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                log.info(
                    "worker %s stopping: no new jobs, %d running", self.name, self.slots.in_use
                )
                self.stop()
                return

    async def _consume(self, runs: anyio.abc.TaskGroup) -> None:
        async with anyio.create_task_group() as shards:
            for stream in self.leases:
                shards.start_soon(self._consume_shard, runs, stream)

    async def _consume_shard(self, runs: anyio.abc.TaskGroup, stream: str) -> None:
        # Each shard reads at most its share of the free slots at a time, so one shard's
        # blocking read never holds every slot while jobs wait on another.
        leases = self.leases[stream]
        share = max(1, self.concurrency // len(self.leases))
        backoff = Backoff()
        group_ready = False
        while not self._stopping.is_set():
            free = min(share, self.slots.free - self._reserved)
            if free <= 0 or not self.slots.may_hold_more:
                await self._slot_freed.wait()
                continue
            self._reserved += free
            try:
                if not group_ready:
                    await leases.ensure_group()
                    group_ready = True
                messages = await leases.read_new(free, self.settings.job_block_ms)
            except self._unavailable:
                self.metrics.redis_errors.inc()
                log.warning("job queue unreachable; retrying in %.1fs", backoff.delay)
                await backoff.wait()
                continue
            finally:
                self._reserved -= free
            backoff.reset()
            await self._start_jobs(runs, stream, messages, recovered=False)

    async def _start_jobs(
        self,
        runs: anyio.abc.TaskGroup,
        stream: str,
        messages: list[Handed],
        *,
        recovered: bool,
    ) -> None:
        for entry_id, payload in messages:
            try:
                job = job_decoder.decode(payload) if payload else None
            except msgspec.DecodeError:
                job = None
            if job is None:
                # Its run, if any, is found by the jobs index's sweep (``_sweep``) and ended.
                log.error("dropping malformed or deleted job %s", entry_id)
                await self._release(stream, entry_id, handled=False)
                continue
            self._jobs[stream, entry_id] = job.run_id
            # A lost worker's job has waited a lease already: it takes any free slot.
            if recovered or self.slots.may_start(job.subject):
                self._launch(runs, stream, entry_id, job, recovered)
            else:
                self.slots.waiting.append((job.subject, (stream, entry_id, job)))

    def _launch(
        self, runs: anyio.abc.TaskGroup, stream: str, entry_id: bytes, job: Job, recovered: bool
    ) -> None:
        """Give the job a slot and run it."""
        self.slots.take(job.subject)
        runs.start_soon(self._run_job, runs, stream, entry_id, job, recovered)

    def _start_waiting(self, runs: anyio.abc.TaskGroup) -> None:
        """Give freed slots to the jobs waiting for one (``workers.slots``)."""
        while not self._stopping.is_set() and (waiting := self.slots.next_waiting()):
            _, (stream, entry_id, job) = waiting
            self._launch(runs, stream, entry_id, job, False)

    async def _renew_leases(self) -> None:
        """Keep the jobs this worker runs looking alive: their idle time is their lease. A job
        found claimed by another worker (this one was paused past the lease) is abandoned."""
        while True:
            await anyio.sleep(self.settings.lease_seconds / 3)
            for stream, leases in self.leases.items():
                held = [entry for shard, entry in self._jobs if shard == stream]
                if not held:
                    continue
                try:
                    lost = await leases.renew(held)
                except self._unavailable:
                    self.metrics.redis_errors.inc()
                    log.warning("could not renew job leases")
                    continue
                for entry_id in lost:
                    run_id = self._jobs.get((stream, entry_id))
                    if run_id is not None:
                        self._abandon(run_id)
                    self._drop_waiting(stream, entry_id)

    def _drop_waiting(self, stream: str, entry_id: bytes) -> None:
        for _, (shard, entry, job) in self.slots.waiting:
            if (shard, entry) == (stream, entry_id):
                self.slots.forget((shard, entry, job))
                del self._jobs[stream, entry_id]
                return

    def _abandon(self, run_id: str) -> None:
        """Stop a run another worker has taken over, writing nothing; closes its model call."""
        scope = self._running.get(run_id)
        if scope is None:
            return
        log.warning("run %s: another worker took its job over; abandoning it", run_id)
        self._stop_reasons[run_id] = _LOST
        scope.cancel()

    async def _reap(self, runs: anyio.abc.TaskGroup) -> None:
        """Claim the jobs of workers that died: unstarted ones run here, started ones end."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        while not self._stopping.is_set():
            with anyio.move_on_after(self.settings.reap_interval_seconds):
                await self._stopping.wait()
            for stream, leases in self.leases.items():
                # Not counting the slots blocked job reads hold: they are mostly idle, and a
                # dead worker's run must not wait for the queue to be empty.
                free = self.slots.free
                if self._stopping.is_set() or free <= 0:
                    break
                try:
                    claimed = await leases.claim_lapsed(lease_ms, free)
                except self._unavailable:
                    self.metrics.redis_errors.inc()
                    continue
                # This worker's own live jobs come back too when it was paused past their
                # lease: claiming them only renewed them; running them again would run them
                # twice.
                lapsed = [message for message in claimed if (stream, message[0]) not in self._jobs]
                if lapsed:
                    self.metrics.leases_reclaimed.inc(len(lapsed))
                    log.warning("claimed %d job(s) of a lost worker", len(lapsed))
                    await self._start_jobs(runs, stream, lapsed, recovered=True)
            if not self._stopping.is_set():
                try:
                    await self._sweep(lease_ms)
                except self._unavailable:
                    self.metrics.redis_errors.inc()

    async def _sweep(self, lease_ms: int) -> None:
        """End the runs whose jobs were lost (trimmed, or gone with a failover), found in the
        jobs index: a queued one fails ``job_lost``, a started one ends as a lost worker's
        would. Each waited twice a lease first, past any accept of it (its deadline is one)."""
        queue, conversations = self.engine.queue, self.engine.conversations
        for lost in await queue.lost_jobs(2 * lease_ms, lease_ms, count=100):
            record = await conversations.run(lost.cid, lost.run_id) if lost.cid else None
            job = Job(
                conversation_id=lost.cid,
                run_id=lost.run_id,
                message_id="",
                assistant_message_id="",
                model=record.model if record is not None else "",
                content="",
            )
            ended: RunState | None = None
            if record is not None and record.state is RunState.QUEUED:
                log.warning("run %s: its job was lost; it ends job_lost", lost.run_id)
                error = ErrorInfo("job_lost", "the run's job was lost before a worker took it")
                ended = await self._end(job, None, RunFailed(lost.run_id, error))
            elif record is not None and record.state in (RunState.RUNNING, RunState.CANCELLING):
                entry = lost.entry_id.encode()
                ended = await self._settle(entry, job, record.state, recovered=True)
            if ended is not None and not await self._announce(job, ended):
                continue  # left in the index: the next sweep announces it
            await queue.forget(lost.stream, [lost.entry_id])

    async def _drain(self) -> None:
        """Let running generations finish within the grace period, then end the rest."""
        with anyio.move_on_after(self.settings.shutdown_grace_seconds):
            while self.slots.in_use:
                await self._slot_freed.wait(math.inf)
        for run_id, scope in list(self._running.items()):
            if self._stop_reasons.get(run_id) != _LOST:
                self._stop_reasons[run_id] = _SHUTDOWN
            scope.cancel()

    async def _listen_control(self) -> None:
        """Hear cancels on this worker's own channel. A lost message costs nothing lasting:
        the cancel mark in Redis stops the run at its next append."""
        subscriber = self.engine.subscriber(
            on_message=lambda channel, data: self._on_control(data),
            on_resync=never_resync,
            ping_seconds=self.settings.live_ping_seconds,
            on_reconnect=self.metrics.redis_reconnects.inc,
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(subscriber.run)
            await subscriber.subscribe(self.engine.queue.control_channel(self.name))

    def _on_control(self, data: bytes) -> None:
        try:
            control = control_decoder.decode(data)
        except msgspec.DecodeError:
            log.error("ignoring malformed control message")
            return
        scope = self._running.get(control.run_id)
        if scope is not None and control.action == "cancel":
            self._stop_reasons.setdefault(control.run_id, _USER)
            scope.cancel()

    async def _run_job(
        self,
        runs: anyio.abc.TaskGroup,
        stream: str,
        entry_id: bytes,
        job: Job,
        recovered: bool,
    ) -> None:
        # Every line this run's task (and the tasks it starts) logs names its conversation and
        # run: this task runs in a copy of the context, so nothing else sees these.
        logs.conversation_id.set(job.conversation_id)
        logs.run_id.set(job.run_id)
        ended: RunState | None = None  # the run's final state, when this worker announces it
        fence: Fence | None = None
        release = True
        run_state = RunState.RUNNING  # what the start found: MISSING when there was no run
        try:
            start = await self._start(stream, entry_id, job)
            run_state = start if isinstance(start, RunState) else RunState.RUNNING
            if isinstance(start, Started):
                fence = start.fence
                ended = await self._generate(job, fence)
            else:
                ended = await self._settle(entry_id, job, start, recovered)
        except self._unavailable:
            # Redis stayed away (or full) longer than the store retries. The job stays
            # pending: once its lease lapses, whoever claims it ends the run.
            self.metrics.redis_errors.inc()
            log.warning("giving run %s up: Redis unreachable or full", job.run_id)
            release = False
        except Exception:
            log.exception("run %s failed inside the worker", job.run_id)
            failed = RunFailed(job.run_id, ErrorInfo("internal_error", "the worker failed"))
            with anyio.CancelScope(shield=True):
                try:
                    ended = await self._end(job, fence, failed)
                except self._unavailable:
                    self.metrics.redis_errors.inc()
                    log.warning("could not end run %s: Redis unreachable", job.run_id)
                    release = False
        finally:
            # No longer live here first, so a lease renewal racing with the release below does
            # not take the job for one lost to another worker.
            del self._jobs[stream, entry_id]
            with anyio.CancelScope(shield=True):
                # The run's notice goes out before its job is acknowledged: a worker dying in
                # between leaves the job to be reclaimed, and the notice to be written then.
                if release and (ended is None or await self._announce(job, ended)):
                    # A job dropped because no run was there for it stays in the jobs index:
                    # a run accepted late is then ended by the sweep.
                    await self._release(stream, entry_id, handled=run_state is not RunState.MISSING)
            self.slots.give_back(job.subject)
            self._start_waiting(runs)
            self._slot_freed.set()

    async def _settle(
        self, entry_id: bytes, job: Job, state: RunState, recovered: bool
    ) -> RunState | None:
        """A job whose run did not start here (its run is in ``state``): returns the run's
        final state when this worker must announce it."""
        if recovered and state in (RunState.RUNNING, RunState.CANCELLING):
            # Its worker died or stalled mid-run. The partial answer stays; the run ends here,
            # once, under this worker's fence, so the old owner cannot write past it.
            taken = await self.engine.conversations.take_over(
                job.conversation_id, job.run_id, self.name, entry_id.decode()
            )
            if taken is None:
                return None  # a duplicate job of the run: its own job ends it
            lost = ErrorInfo("worker_lost", "the worker running this answer stopped responding")
            ending: Event = (
                RunFailed(job.run_id, lost)
                if taken.state is RunState.RUNNING
                else RunCancelled(job.run_id, reason=_USER)
            )
            return await self._end(job, taken.fence, ending)
        if state in TERMINAL_STATES:
            # Cancelled before any worker had it, or ended by a worker that died before
            # acknowledging the job (and maybe before announcing the run): announce it.
            return state
        return None  # never accepted, or another job's: nothing to generate, nothing to announce

    async def _generate(self, job: Job, fence: Fence) -> RunState | None:
        """Generate a started run; returns its final state when this worker ended it."""
        run_id = job.run_id
        provider = self.providers.get(job.model)
        generator = self.generators.get(job.model)
        if provider is None and generator is None:
            failed = RunFailed(run_id, ErrorInfo("unknown_model", f"no provider for {job.model!r}"))
            return await self._end(job, fence, failed)
        outcome: Finish | Failure | None = None
        stopped_by: str | None = None
        scope = anyio.CancelScope()
        self.metrics.runs_started.inc()
        started = time.monotonic()
        ttft = self.metrics.time_to_first_token

        def first_output() -> None:
            ttft.observe(time.monotonic() - started)

        self._running[run_id] = scope
        try:
            with scope:
                # Whatever the model, a run ends within its time limit; leaving this scope
                # closes the model call like a cancel does.
                with anyio.move_on_after(self.settings.max_run_seconds) as limit:
                    request = await self._request(job)
                    generation = Generation(
                        self.engine.conversations,
                        job,
                        fence,
                        self.settings.coalesce_ms / 1000,
                        first_output=first_output,
                    )

                    async def produce(generation: Generation) -> Outcome:
                        if generator is not None:
                            return await generator.produce(
                                generation, request, cid=job.conversation_id, run_id=run_id
                            )
                        assert provider is not None
                        return await generation.relay(provider.stream(request))

                    outcome = await generation.run(produce)
                if limit.cancelled_caught:
                    stopped_by = _TIMEOUT
        except CancelRequested:
            stopped_by = _USER
        except Fenced:
            log.warning("run %s: another worker took it over; abandoning it", run_id)
            return None  # whoever took it over ends and announces it
        except RunGone:
            return None  # whoever ended the run announces it
        finally:
            if self._running.get(run_id) is scope:
                del self._running[run_id]
            reason = self._stop_reasons.pop(run_id, None)
        if reason == _LOST:
            return None
        if isinstance(outcome, Failure):
            self.metrics.provider_error(outcome.code)
        if scope.cancelled_caught:
            stopped_by = reason or _USER
        ending = _terminal_event(run_id, outcome, stopped_by)
        if stopped_by == _TIMEOUT:
            limit_text = f"{self.settings.max_run_seconds:g} s"
            ending = RunFailed(
                run_id, ErrorInfo("run_timeout", f"the run reached its time limit of {limit_text}")
            )
        with anyio.CancelScope(shield=True):
            status = await self._end(job, fence, ending)
        seconds = time.monotonic() - started
        self.metrics.run_duration.observe(seconds)
        # One line per run, with its conversation and run (the context): what an operator
        # follows a run by. The model's name, never the prompt.
        log.info("run of %s ended %s after %.2f s", job.model, status or "elsewhere", seconds)
        return status

    async def _start(self, stream: str, entry_id: bytes, job: Job) -> Started | RunState:
        """Start the run; a run not accepted yet gets a moment, then is given up for good.
        Otherwise the run's state says why it did not start here."""
        conversations = self.engine.conversations
        cid, run_id, entry = job.conversation_id, job.run_id, entry_id.decode()
        _, started = encode(RunStarted(run_id, job.assistant_message_id, job.model))
        for delay in _ACCEPT_WAITS:
            start = await conversations.start_run(cid, run_id, self.name, entry, started)
            if start is not RunState.MISSING:
                return start
            await anyio.sleep(delay)
        if not await self.engine.queue.holds(stream, entry_id):
            # The front refused the run and withdrew its job (the conversation is somebody
            # else's, or busy): no late accept can come, so nothing is written to its keys.
            log.info("dropping the job of run %s: the front withdrew it", run_id)
            return RunState.MISSING
        start = await conversations.start_run(
            cid, run_id, self.name, entry, started, orphan_if_missing=True
        )
        if start is RunState.ORPHANED:
            log.warning("dropping the job of run %s: the run was never accepted", run_id)
        return start

    async def _request(self, job: Job) -> GenerationRequest:
        """The provider's input: the prompt, the earlier turns, the catalogue's upstream name."""
        spec = self.catalogue.get(job.model)
        history: tuple[Message, ...] = ()
        if spec is not None and spec.provider != "simulated":
            # The built-in model ignores context; it is not worth a read of the whole stream.
            # A generator gets it as ``run.history``.
            history = await conversation_context(
                self.engine.conversations, job.conversation_id, job.run_id, self.settings
            )
        upstream = spec.upstream_model(job.model) if spec is not None else job.model
        return GenerationRequest(job.model, job.content, job.params, history, upstream)

    async def _end(self, job: Job, fence: Fence | None, event: Event) -> RunState | None:
        """Write the run's terminal event under ``fence``; returns its state if this call
        ended the run."""
        name, data = encode(event)
        state = TERMINAL_EVENTS[type(event)]
        ended = await self.engine.conversations.finish(
            job.conversation_id, job.run_id, fence, state, name, data
        )
        if ended is Refused.FENCED:
            log.warning(
                "run %s: another worker owns it now; its end is not written here", job.run_id
            )
        if not isinstance(ended, Ended) or not ended.just_now:
            return None
        self.metrics.run_ended(state, event.error.code if isinstance(event, RunFailed) else "")
        return state

    async def _announce(self, job: Job, state: RunState) -> bool:
        """Add the finished run's notice to the outbox; False if Redis stayed away too long.
        The Durable Streams subscriptions of the conversation are woken too (best effort: the
        subscription sweep wakes them if this is lost)."""
        try:
            await self.engine.outbox.add(RunEnded(job.conversation_id, job.run_id, state.value))
        except self._unavailable:
            self.metrics.redis_errors.inc()
            log.error("could not announce run %s; its job is left to be reclaimed", job.run_id)
            return False
        try:
            await self.engine.subscriptions.changed("conversations/" + job.conversation_id)
        except self._unavailable:
            log.warning("could not wake the subscriptions of %s", job.conversation_id)
        return True

    async def _release(self, stream: str, entry_id: bytes, *, handled: bool = True) -> None:
        """Done with a job (``handled``: its run was started or ended here, or another job's).
        If Redis is unreachable the job stays pending, and whoever claims it after its lease
        finds its run ended and releases it then."""
        try:
            await self.leases[stream].release(entry_id, handled=handled)
        except self._unavailable:
            self.metrics.redis_errors.inc()
            log.warning("could not acknowledge job %s: Redis unreachable", entry_id.decode())


def _check_webhook(settings: Settings) -> None:
    errors = webhook.setting_errors(settings.webhook_url, settings.webhook_secret)
    if errors:
        raise SystemExit(errors[0])


def _terminal_event(run_id: str, outcome: Finish | Failure | None, stopped_by: str | None) -> Event:
    if stopped_by == _SHUTDOWN:
        return RunFailed(
            run_id, ErrorInfo("worker_shutdown", "the worker stopped before the run finished")
        )
    if stopped_by is not None or outcome is None:
        return RunCancelled(run_id, reason=_USER)
    if isinstance(outcome, Finish):
        return RunCompleted(run_id, outcome.reason, outcome.usage)
    return RunFailed(run_id, ErrorInfo(outcome.code, outcome.message))

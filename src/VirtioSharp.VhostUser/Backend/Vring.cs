using System.Diagnostics;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// One virtqueue as the vhost-user front-end configured it, and the worker thread that serves it.
/// Configuration is changed by the connection's thread only; while the worker runs, the queue
/// object belongs to it. A ring is started (worker running) or stopped, and independently
/// enabled or disabled (vhost-user.rst, "Ring states"); the worker drains only when both.
/// </summary>
internal sealed class Vring : IDisposable
{
    private readonly IVirtioDevice _device;
    private readonly ILogSink? _log;
    private readonly AioMode _aio;
    private readonly EventFd _control = EventFd.Create();
    private readonly EventFd _completed = EventFd.Create(); // the port's wake-up: an asynchronous backend finished something
    private readonly CompletionPort _port;
    private static int s_uringFallbackLogged;
    private Thread? _worker;
    private volatile bool _stopRequested;
    private volatile bool _enabled;
    private EventFd? _call;
    private ITraceSink? _trace; // the device's recorder while the worker runs; null when nobody records
    private EventFd? _err;
    private IoUringQueueIo? _callWatcher; // RunUring's I/O where its ring can carry the call: it does while this watches a backend's descriptor (worker thread only)
    private EventFd? _callQueued; // the call whose write waits in the ring's submission queue; a reference is held

    public Vring(int index, IVirtioDevice device, ILogSink? log, AioMode aio = AioMode.Auto, AdaptivePoller? poller = null, int cpu = -1, CallWatchdog? watchdog = null)
    {
        Index = index;
        Cpu = cpu;
        _device = device;
        _log = log;
        _aio = aio;
        Poller = poller ?? new AdaptivePoller(0);
        Watchdog = watchdog ?? new CallWatchdog();
        _port = new CompletionPort(device.MaxQueueSize, () => _completed.Signal());
    }

    /// <summary>Sends the call again when the driver keeps waiting for used buffers (an interrupt lost on its way).</summary>
    public CallWatchdog Watchdog { get; }

    /// <summary>How long the worker looks at the ring after a drain before it sleeps (its counters: polls and sleeps).</summary>
    public AdaptivePoller Poller { get; }

    private static readonly Action<(IVirtioDevice Device, IDeviceQueue Queue), ushort, int> s_complete =
        static (s, tag, result) => s.Device.CompleteIo(s.Queue, tag, result);

    public int Index { get; }
    /// <summary>The CPU the worker pins itself to when it starts; -1: wherever the scheduler puts it.</summary>
    public int Cpu { get; }

    // --- configuration (connection thread) ---
    /// <summary>SET_VRING_NUM; 0 until set.</summary>
    public uint Num { get; set; }
    /// <summary>SET_VRING_ADDR; null until set.</summary>
    public VringAddress? Address { get; set; }
    /// <summary>Next available index to process (packed: both positions, see <see cref="VringFormat"/>): SET_VRING_BASE, and where a stopped ring left off.</summary>
    public uint Base { get; set; }
    public EventFd? Kick { get; private set; }
    public bool Enabled => _enabled;

    // --- running state ---
    public IDeviceQueue? Queue { get; private set; }
    public bool Started => _worker != null;
    /// <summary>The worker stopped because the driver broke the ring (vhost-user has no status register to say so).</summary>
    public bool Failed { get; private set; }
    public long Kicks => Interlocked.Read(ref _kicks);
    public long Calls => Interlocked.Read(ref _calls);
    private long _kicks, _calls;

    /// <summary>Replaces the kick descriptor (the ring must be stopped).</summary>
    public void SetKick(EventFd? kick)
    {
        if (Started)
            throw new InvalidOperationException("stop the ring before replacing its kick descriptor");
        Kick?.Dispose();
        Kick = kick;
    }

    /// <summary>Replaces the call descriptor; safe while the worker runs.</summary>
    public void SetCall(EventFd? call)
    {
        Interlocked.Exchange(ref _call, call)?.Dispose();
        // A notification sent to the old descriptor may have been lost in the swap; an extra
        // one is harmless (the driver re-reads the used ring), a lost one stalls it.
        if (call != null && Started)
            call.Signal();
    }

    public void SetErr(EventFd? err) => Interlocked.Exchange(ref _err, err)?.Dispose();

    public void SetEnabled(bool enabled)
    {
        if (_enabled == enabled)
            return;
        _enabled = enabled;
        _control.Signal(); // the worker re-evaluates: starts or stops watching the kick
    }

    /// <summary>Starts the worker over <paramref name="queue"/> (built over the current memory table).</summary>
    public void Start(IDeviceQueue queue)
    {
        if (Started)
            throw new InvalidOperationException($"queue {Index} is already started");
        if (Kick is null)
            throw new InvalidOperationException($"queue {Index} has no kick descriptor");
        Queue = queue;
        Watchdog.Reset();
        _trace = _device.Trace;
        Failed = false;
        _stopRequested = false;
        _control.TryRead(out _);
        _completed.TryRead(out _);
        _worker = new Thread(Run) { IsBackground = true, Name = $"vhost-user queue {Index}" };
        _worker.Start();
    }

    /// <summary>Stops the worker (waits for the drain in progress) and records where the ring stands.</summary>
    public void Stop()
    {
        if (_worker is null)
            return;
        _stopRequested = true;
        _control.Signal();
        _worker.Join();
        _worker = null;
        if (Queue != null)
            Base = VringFormat.BaseOf(Queue);
        (Queue as IDisposable)?.Dispose();
        Queue = null;
    }

    /// <summary>Forgets everything the front-end set (RESET_DEVICE, disconnect).</summary>
    public void Reset()
    {
        Stop();
        SetKick(null);
        SetCall(null);
        SetErr(null);
        _enabled = false;
        Num = 0;
        Address = null;
        Base = 0;
        Failed = false;
    }

    private void Run()
    {
        var queue = Queue!;
        var kick = Kick!;
        bool kickRef = false, controlRef = false, completedRef = false;
        IoUring? ring = null;
        if (Cpu >= 0 && !ThreadAffinity.TryPinCurrentThread(Cpu, out var pinError))
            _log.Warn($"queue {Index}: worker not pinned: {pinError}");
        try
        {
            kick.Handle.DangerousAddRef(ref kickRef);
            _control.Handle.DangerousAddRef(ref controlRef);
            _completed.Handle.DangerousAddRef(ref completedRef);
            // A back-end that died after moving used idx and before signalling the call left
            // used elements the driver has not been told about; with nothing new to complete,
            // nothing else would tell it. One interrupt with no work is harmless.
            SignalCall("ring started: used buffers a previous back-end may not have signalled");
            // The kernel's io_uring is probed once per process; what it lacks sends the worker to poll(2).
            if (_aio != AioMode.Sync && !_device.SupportsQueueIo && IoUringSupport.Probed.Complete)
            {
                // No file I/O to start, but the worker still waits better in io_uring: a kick
                // arrives as a completion of its multishot poll, with no read(2) of the eventfd
                // after each wake-up as poll(2) needs. A ring the kernel refuses leaves poll(2).
                ring = IoUring.TryCreate(RingEntries(0, queue.Size), out _);
            }
            else if (_aio != AioMode.Sync && _device.SupportsQueueIo)
            {
                if (!AioChoice.UseIoUring(_aio, true, IoUringSupport.Probed, out var missing))
                {
                    if (Interlocked.Exchange(ref s_uringFallbackLogged, 1) == 0)
                        _log.Info($"queue workers do file I/O synchronously: {missing}");
                }
                else
                {
                    // Made on this thread: the ring is single-issuer where the kernel allows it. Its
                    // completion queue (twice the submission queue) holds a full queue's completions.
                    ring = IoUring.TryCreate(RingEntries(_device.MaxQueueIoInFlight, queue.Size), out var why);
                    if (ring is null)
                    {
                        if (_aio == AioMode.IoUring)
                            throw new InvalidOperationException($"io_uring is required (AioMode.IoUring), but {why}");
                        if (Interlocked.Exchange(ref s_uringFallbackLogged, 1) == 0)
                            _log.Info($"queue workers do file I/O synchronously: {why}");
                    }
                }
            }
            if (ring != null)
            {
                _log.Debug(_device.SupportsQueueIo
                    ? $"queue {Index}: asynchronous I/O through io_uring, up to {Math.Min(_device.MaxQueueIoInFlight, (int)queue.Size)} in flight"
                    : $"queue {Index}: waits in io_uring");
                if (RunUring(queue, kick, ring))
                {
                    ring.Dispose();
                    ring = null;
                    RunPolled(queue, kick);
                }
            }
            else
                RunPolled(queue, kick);
        }
        catch (Exception e)
        {
            // Nothing the driver writes reaches here (the device never throws for it); this is
            // a host-side failure. Stop this queue, keep the process alive.
            Failed = true;
            _log.Error($"queue {Index}: worker stopped by an unexpected error: {e.GetType().Name}: {e.Message}");
            FinishInFlight(queue, ring);
            _err?.Signal();
        }
        finally
        {
            ring?.Dispose(); // cancels the polls still armed; no I/O is left in flight
            if (kickRef)
                kick.Handle.DangerousRelease();
            if (controlRef)
                _control.Handle.DangerousRelease();
            if (completedRef)
                _completed.Handle.DangerousRelease();
        }
    }

    /// <summary>Polls ended by the kernel in a row before the worker gives io_uring up.</summary>
    private const int MaxPollFailures = 8;

    private static uint RingEntries(int maxInFlight, ushort queueSize) =>
        (uint)Math.Min(maxInFlight, (int)queueSize) + 6; // + the three polls, the two timers and the call

    /// <summary>
    /// Waits in poll(2) on the control, kick and completion descriptors. File I/O is synchronous;
    /// an asynchronous backend still keeps many requests in flight, completed through the port.
    /// The worker leaves only with nothing in flight.
    /// </summary>
    private void RunPolled(IDeviceQueue queue, EventFd kick)
    {
        Span<PollFd> fds = stackalloc PollFd[3];
        var io = _device.SupportsQueueIo ? new CompletionPortQueueIo(_port) : null;
        var drain = true; // buffers may have been made available before the ring started
        var stopped = false;
        while (true)
        {
            if (_stopRequested)
                stopped = true;
            if (!stopped && drain && _enabled && Drain(queue, io) == QueueOutcome.NeedsReset)
                stopped = true; // take nothing more; finish what is in flight
            drain = false;
            if (stopped && _device.QueueIoInFlight(queue.Index) == 0)
            {
                ReleaseHeld(queue);
                return;
            }
            var timeout = -1;
            if (_enabled && !stopped)
            {
                var wait = _device.QueueWaitTicks(queue);
                if (wait > 0)
                    timeout = (int)Math.Min(int.MaxValue, (wait * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency);
                else if (PollRing(queue, null))
                {
                    drain = true;
                    continue;
                }
            }
            var watch = _enabled && !stopped ? Watchdog.BeforeSleep(queue) : -1;
            if (watch >= 0 && (timeout < 0 || watch < timeout))
                timeout = watch;
            fds[0] = new PollFd(_control.Fd);
            fds[1] = new PollFd(_enabled && !stopped ? kick.Fd : -1); // poll skips negative descriptors
            fds[2] = new PollFd(_completed.Fd);
            Poller.Sleeping();
            FdPoll.Wait(fds, timeout);
            Poller.Woke();
            if (Watchdog.Due(queue))
                SignalCall(ResentWhy);
            if (timeout >= 0)
                drain = true; // the limits may let more through now
            if (fds[0].Ready)
            {
                _control.TryRead(out _);
                drain = true;
            }
            if (fds[1].Ready)
            {
                kick.TryRead(out var count);
                Interlocked.Increment(ref _kicks);
                if (_trace is not null)
                    RecordKick(count);
                drain = true;
            }
            if (fds[2].Ready)
            {
                _completed.TryRead(out _);
                TakeCompletions(queue);
            }
        }
    }

    /// <summary>Finishes what the backend's threads posted, then publishes and notifies once.</summary>
    private void TakeCompletions(IDeviceQueue queue)
    {
        if (_port.Drain((_device, queue), s_complete) > 0 && queue.PublishUsed())
            SignalCall("asynchronous completions used");
    }

    /// <summary>
    /// Waits in io_uring on everything at once: multishot polls on the control, kick and
    /// completion descriptors, and the file operations the backend started there. Requests complete
    /// in whatever order the kernel finishes them. The worker leaves only with nothing in
    /// flight, so guest memory is never unmapped under an I/O (vhost-user.rst: GET_VRING_BASE
    /// stops the ring; here its in-flight requests are finished and used first).
    /// </summary>
    /// <returns>True when the worker must carry on in poll(2): its polls kept failing (nothing is in flight then).</returns>
    private bool RunUring(IDeviceQueue queue, EventFd kick, IoUring ring)
    {
        var io = _device.SupportsQueueIo ? new IoUringQueueIo(ring, _port) : null;
        _callWatcher = ring.SkipsSuccessCompletions ? io : null;
        try
        {
            return RunUringLoop(queue, kick, ring, io);
        }
        finally
        {
            io?.ReleaseWatches(); // what the worker received for a backend goes back to the backend's own thread
            EndCallsThroughRing(ring);
        }
    }

    private bool RunUringLoop(IDeviceQueue queue, EventFd kick, IoUring ring, IoUringQueueIo? io)
    {
        bool armControl = true, armKick = true, armCompleted = true, stopped = false, fallBack = false, timerArmed = false, watchArmed = false;
        var pollFailures = 0;
        var drain = true; // buffers may have been made available before the ring started
        while (true)
        {
            if (_stopRequested)
                stopped = true;
            if (drain)
                FlushCall(ring); // a call queued for the next wait goes now: the worker drains first
            if (!stopped && drain && _enabled && Drain(queue, io) == QueueOutcome.NeedsReset)
                stopped = true; // take nothing more; finish what is in flight
            drain = false;
            if (stopped && _device.QueueIoInFlight(queue.Index) == 0)
            {
                ReleaseHeld(queue);
                return fallBack && !_stopRequested;
            }
            if (armControl && !fallBack)
                armControl = !ring.QueuePollMultishot(_control.Fd, IoUringQueueIo.ControlTag);
            if (armKick && !fallBack)
                armKick = !ring.QueuePollMultishot(kick.Fd, IoUringQueueIo.KickTag);
            if (armCompleted)
                armCompleted = !ring.QueuePollMultishot(_completed.Fd, IoUringQueueIo.CompletionTag);
            io?.ArmWatches();
            var wait = !stopped && _enabled ? _device.QueueWaitTicks(queue) : 0;
            if (wait > 0)
            {
                if (!timerArmed)
                    timerArmed = ring.QueueTimeout(wait * 1_000_000_000 / Stopwatch.Frequency + 1, IoUringQueueIo.TimerTag);
            }
            else if (!stopped && _enabled && PollRing(queue, ring) && !ring.HasCompletion)
            {
                drain = true;
                continue;
            }
            if (!ring.HasCompletion)
            {
                if (!watchArmed && !stopped && _enabled && Watchdog.BeforeSleep(queue) is >= 0 and var watch)
                    watchArmed = ring.QueueTimeout(watch * 1_000_000L + 1, IoUringQueueIo.WatchdogTag, slot: 1);
                Poller.Sleeping();
                ring.SubmitAndWait(wait: true); // with the call queued by the drain: its write, then the wait
                CallSubmitted(ring);
                Poller.Woke();
            }
            var completed = false;
            while (ring.TryTakeCompletion(out var cqe))
            {
                if (IoUringQueueIo.IsIo(cqe.UserData))
                {
                    _device.CompleteIo(queue, (ushort)cqe.UserData, cqe.Result);
                    completed = true;
                    continue;
                }
                if (cqe.UserData == IoUringQueueIo.TimerTag)
                {
                    timerArmed = false;
                    drain = true; // the limits may let more through now
                    continue;
                }
                if (cqe.UserData == IoUringQueueIo.CallTag)
                {
                    WriteCall(); // the ring's write failed (its only completion): the plain way
                    continue;
                }
                if (cqe.UserData == IoUringQueueIo.WatchdogTag)
                {
                    watchArmed = false;
                    if (Watchdog.Due(queue))
                        SignalCall(ResentWhy);
                    continue;
                }
                if (IoUringQueueIo.IsWatch(cqe.UserData))
                {
                    // A backend's descriptor (an NBD socket): it receives on this thread and posts
                    // what finished to the port without waking it, so the port is taken here.
                    io?.OnWatch(cqe);
                    completed |= _port.Drain((_device, queue), s_complete) > 0;
                    continue;
                }
                if (IoUringQueueIo.IsWatchRemove(cqe.UserData))
                    continue;
                var more = (cqe.Flags & IoUring.CqeFlagMore) != 0;
                // The eventfds behind the polls below are not read: a multishot poll posts a CQE
                // for each wake-up of its descriptor whether or not the counter was reset, so the
                // read(2) per wake-up would only cost a system call. (Re-arming a poll on a counter
                // left non-zero posts one spare CQE at once: a drain that finds nothing.)
                if (cqe.UserData == IoUringQueueIo.CompletionTag)
                {
                    armCompleted |= !more;
                    if (io is { Watching: true })
                        io.ServeWatches(); // the wake-up may be a backend handing a descriptor over
                    completed |= _port.Drain((_device, queue), s_complete) > 0;
                    continue;
                }
                if (cqe.UserData == IoUringQueueIo.ControlTag)
                {
                    _control.TryRead(out _);
                    armControl |= !more;
                }
                else
                {
                    if (cqe.Result >= 0)
                    {
                        Interlocked.Increment(ref _kicks);
                        if (_trace is not null && kick.TryRead(out var count))
                            RecordKick(count); // only a recording needs how many kicks this wake-up stood for
                    }
                    armKick |= !more;
                }
                if (cqe.Result < 0 && !more)
                {
                    // A poll the kernel ends at once, each time it is armed, would spin this thread.
                    if (++pollFailures >= MaxPollFailures && !fallBack)
                    {
                        fallBack = stopped = true;
                        _log.Warn($"queue {Index}: io_uring polls keep failing ({Errno.Describe(-cqe.Result)}); finishing the I/O in flight, then waiting in poll(2) with synchronous I/O");
                    }
                    else
                        _log.Debug($"queue {Index}: a poll ended with {Errno.Describe(-cqe.Result)}; armed again");
                    if (fallBack)
                        continue;
                }
                else
                    pollFailures = 0;
                drain = true;
            }
            if (completed && queue.PublishUsed())
                SignalCall("asynchronous completions used");
        }
    }

    /// <summary>
    /// After a drain, looks at the ring (and at the completions of <paramref name="ring"/>) for up
    /// to the poller's window before the worker sleeps, with the driver's notifications off
    /// (2.7.10) so it does not pay for a kick the worker would not need. When it finds work the
    /// queue stays <see cref="IDeviceQueue.Polled"/>: the next drain leaves notifications off too,
    /// since the worker comes back here before it sleeps. True when it found work; false when the
    /// worker should sleep, notifications back on.
    /// </summary>
    private bool PollRing(IDeviceQueue queue, IoUring? ring)
    {
        var until = Poller.Begin();
        if (Stopwatch.GetTimestamp() >= until)
            return Unpolled(queue); // a drain held back by the limits left them off
        queue.DisableNotifications();
        queue.Polled = true;
        if (ring != null)
        {
            ring.SubmitAndReap(); // what the drain queued (the call too) goes to the kernel now
            CallSubmitted(ring);
        }
        var reap = ring != null && _device.QueueIoInFlight(queue.Index) > 0;
        var spins = 0;
        do
        {
            if (queue.HasAvailable || (reap && ring!.HasCompletion))
            {
                Poller.Hit();
                return true;
            }
            if (reap && (++spins & 15) == 0)
            {
                ring!.SubmitAndReap(); // completions are posted on request (DEFER_TASKRUN)
                CallSubmitted(ring);
            }
            Thread.SpinWait(4);
        }
        while (!_stopRequested && _enabled && Stopwatch.GetTimestamp() < until);
        if (Unpolled(queue))
        {
            Poller.Hit();
            return true;
        }
        return false;
    }

    /// <summary>Ends polling: notifications on again (2.7.10); true if chains arrived meanwhile.</summary>
    private static bool Unpolled(IDeviceQueue queue)
    {
        queue.Polled = false;
        return queue.EnableNotifications();
    }

    /// <summary>After a host-side failure: waits for the I/O still in flight, so no completion lands after memory is unmapped.</summary>
    private void FinishInFlight(IDeviceQueue queue, IoUring? ring)
    {
        try
        {
            while (_device.QueueIoInFlight(queue.Index) > 0)
            {
                var any = false;
                if (ring != null)
                {
                    ring.SubmitAndWait(wait: false);
                    while (ring.TryTakeCompletion(out var cqe))
                    {
                        if (IoUringQueueIo.IsIo(cqe.UserData))
                        {
                            _device.CompleteIo(queue, (ushort)cqe.UserData, cqe.Result);
                            any = true;
                        }
                    }
                }
                _completed.TryRead(out _);
                any |= _port.Drain((_device, queue), s_complete) > 0;
                if (!any)
                    _completed.Wait(1); // the ring's own polls may be gone: look again soon
            }
            if (queue.PublishUsed())
                SignalCall("the last completions used after a host-side failure");
        }
        catch (Exception e)
        {
            _log.Error($"queue {Index}: could not wait for the I/O in flight: {e.Message}");
        }
    }

    /// <summary>One drain of the available ring. On NeedsReset the queue stops: the call and the err descriptor are signalled here.</summary>
    private QueueOutcome Drain(IDeviceQueue queue, IQueueIo? io)
    {
        // The worker looks at the ring again before it sleeps (PollRing, with or without a
        // window), and turns notifications on only then (2.7.10, 2.8.10): a driver that makes the
        // next chain available while the worker signals this drain's call need not kick.
        queue.Polled = true;
        var outcome = _device.ProcessQueue(queue, io);
        switch (outcome)
        {
            case QueueOutcome.Interrupt:
                SignalCall("used buffers published by the drain");
                break;
            case QueueOutcome.NeedsReset:
                SignalCall("the ring stops: completions published before the breach"); // they still deserve a notification
                Failed = true;
                var why = _device.Breaches.ResetRequested && queue.LastRingError == RingError.None
                    ? "strict mode stopped at the first driver breach"
                    : $"the ring is corrupt ({queue.LastRingError}, {queue.LastRingErrorValue})";
                _log.Error($"queue {Index}: stopped, device needs reset: {why}. vhost-user has no status register; "
                    + (_err != null ? "signalled the error descriptor" : "no error descriptor was given")
                    + "; the guest must reset the device");
                _err?.Signal();
                break;
        }
        return outcome;
    }

    /// <summary>A ring that stops returns what a test-only <see cref="HeldCompletionsQueue"/> still holds.</summary>
    private void ReleaseHeld(IDeviceQueue queue)
    {
        if (queue is HeldCompletionsQueue held)
        {
            held.ReleaseAll();
            if (queue.PublishUsed())
                SignalCall("held completions released");
        }
    }

    /// <summary>Makes the worker drain the ring again (from any thread).</summary>
    public void Wake() => _control.Signal(); // false, harmlessly, once the ring is disposed

    private const string ResentWhy = "sent again: the driver still waits for used buffers it was told about (the last interrupt was lost)";

    /// <summary>
    /// Signals the call eventfd; <paramref name="why"/> (a constant) is recorded while someone
    /// records. While the worker receives a backend's replies itself (an NBD socket it watches),
    /// the write is queued on its ring and goes with its next io_uring_enter, which is the one it
    /// waits in when the ring has nothing more for it: one system call instead of two, and the
    /// driver's thread that the write wakes does not preempt the worker between them, which
    /// pays when the server's threads compete for the same cores. Otherwise, as for a file or
    /// null device, it is a plain write(2): queued there, it lost on every row measured
    /// (benchmarks.md §5.12). Paths that do not wait next submit it first (<see cref="FlushCall"/>).
    /// </summary>
    private void SignalCall(string why)
    {
        Interlocked.Increment(ref _calls);
        if (_trace is not null)
            RecordCall(why);
        if (_callWatcher is { Watching: true } watcher && QueueCall(watcher.Ring))
            return;
        WriteCall();
    }

    private void WriteCall()
    {
        // A concurrent SET_VRING_CALL may dispose the descriptor we read; then use the new one.
        if (Volatile.Read(ref _call) is { } call && !call.Signal())
            Volatile.Read(ref _call)?.Signal();
    }

    /// <summary>Queues the call's write on <paramref name="ring"/>; false when it must be written now.</summary>
    private bool QueueCall(IoUring ring)
    {
        if (_callQueued != null)
            return true; // one write already waits: the driver reads the used ring once for both
        // A descriptor without O_NONBLOCK would be written by the kernel's worker threads, later.
        if (Volatile.Read(ref _call) is not { IsNonBlocking: true } call)
            return false;
        var added = false;
        try
        {
            call.Handle.DangerousAddRef(ref added); // SET_VRING_CALL may close it before the submission
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        if (!ring.QueueEventFdSignal(call.Fd, IoUringQueueIo.CallTag))
        {
            call.Handle.DangerousRelease();
            return false;
        }
        _callQueued = call;
        return true;
    }

    /// <summary>After an io_uring_enter: once the kernel took the call's write, the descriptor may close.</summary>
    private void CallSubmitted(IoUring ring)
    {
        if (_callQueued is { } call && ring.Unsubmitted == 0)
        {
            _callQueued = null;
            call.Handle.DangerousRelease();
        }
    }

    /// <summary>Submits a queued call now (the worker does not wait next).</summary>
    private void FlushCall(IoUring ring)
    {
        if (_callQueued is null)
            return;
        ring.SubmitAndWait(wait: false);
        CallSubmitted(ring);
    }

    /// <summary>The worker leaves io_uring: a call still queued is submitted, or written the plain way.</summary>
    private void EndCallsThroughRing(IoUring ring)
    {
        _callWatcher = null;
        if (_callQueued is not { } call)
            return;
        try
        {
            ring.SubmitAndWait(wait: false);
        }
        catch (NativeCallException)
        {
            // written below
        }
        var taken = ring.Unsubmitted == 0;
        _callQueued = null;
        call.Handle.DangerousRelease();
        if (!taken)
            WriteCall(); // a spurious interrupt is harmless; a lost one stalls the driver
    }

    private void RecordKick(ulong count)
    {
        if (_trace is { Active: true } t)
            t.Event(RingEvents.Kick(Index, count));
    }

    private void RecordCall(string why)
    {
        if (_trace is { Active: true } t)
            t.Event(RingEvents.Call(Index, why));
    }

    public void Dispose()
    {
        Reset();
        _control.Dispose();
        _port.Dispose(); // the worker is gone and left nothing in flight
        _completed.Dispose();
    }
}
